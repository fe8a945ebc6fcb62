"""The result store in Redis: one JSON value per review, plus a capped stream of all predictions.

Layout (``<prefix>`` is ``SENTIQ_QUEUE_KEY_PREFIX``, default ``sentiq``):

- ``<prefix>:result:<review id>``: a string holding the :class:`~sentiq.contract.Prediction`
  JSON, with a TTL of ``SENTIQ_QUEUE_RESULT_TTL_S`` seconds.
- ``<prefix>:predictions``: a stream, trimmed to about ``SENTIQ_QUEUE_STREAM_MAXLEN`` entries;
  each entry has the fields ``id`` (the review id) and ``result`` (the same JSON).

The value is written before the stream entry, in one MULTI/EXEC transaction, so a reader that
sees an id in the stream can always GET its result.

Workers publish a job's results with :meth:`ResultStore.publish_once`: a Lua script marks the
job's record and writes its results in one atomic step, so a job that RQ runs twice (its worker
died after publishing, or a Redis outage outlasted its heartbeat) publishes its results once.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from typing import Any

from redis import Redis
from redis.client import Pipeline

from sentiq.contract import Prediction, result_key, stream_key

STREAM_FIELD_ID = "id"
STREAM_FIELD_RESULT = "result"
#: Stream id meaning "before any entry".
STREAM_START = "0-0"

# KEYS[1]: the guard (a job's hash), KEYS[2]: the stream. ARGV: guard field, marker, result TTL,
# stream maxlen, result-key prefix, then (review id, result JSON) pairs. A guard that no longer
# exists cannot be marked; its results are written all the same rather than lost.
_PUBLISH_ONCE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return -1
end
local written = 0
for i = 6, #ARGV, 2 do
  redis.call('SET', ARGV[5] .. ARGV[i], ARGV[i + 1], 'EX', ARGV[3])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'id', ARGV[i], 'result', ARGV[i + 1])
  written = written + 1
end
return written
"""


class ResultStore:
    """Reads and writes predictions under one key prefix."""

    def __init__(self, client: Redis, prefix: str, ttl_s: int, stream_maxlen: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.stream_maxlen = stream_maxlen
        self.stream = stream_key(prefix)

    def publish(self, predictions: Iterable[Prediction]) -> int:
        """Store each prediction under its id and append it to the stream; returns how many."""
        count = 0
        with self.client.pipeline(transaction=True) as pipe:
            for prediction in predictions:
                payload = prediction.to_json()
                pipe.set(result_key(self.prefix, prediction.id), payload, ex=self.ttl_s)
                pipe.xadd(
                    self.stream,
                    {STREAM_FIELD_ID: prediction.id, STREAM_FIELD_RESULT: payload},
                    maxlen=self.stream_maxlen,
                    approximate=True,
                )
                count += 1
            if count:
                pipe.execute()
        return count

    def publish_once(
        self, jobs: Sequence[tuple[str, Sequence[Prediction]]], guard_field: str, marker: str
    ) -> list[int]:
        """Publish each job's predictions unless its guard hash already carries ``guard_field``.

        ``jobs`` pairs the key of a hash that identifies one run of work (a job's record) with the
        predictions of that work. Each pair is one atomic script call, all in one round trip;
        returns, per pair, how many predictions were written, or -1 when an earlier run had
        already published them.
        """
        if not jobs:
            return []
        script = self.client.register_script(_PUBLISH_ONCE_LUA)
        prefix = result_key(self.prefix, "")
        with self.client.pipeline(transaction=False) as pipe:
            for guard_key, predictions in jobs:
                args: list[str | int] = [guard_field, marker, self.ttl_s, self.stream_maxlen, prefix]
                for prediction in predictions:
                    args.extend((prediction.id, prediction.to_json()))
                script(keys=[guard_key, self.stream], args=args, client=pipe)
            return [int(written) for written in pipe.execute()]

    def forget(self, ids: Sequence[str], pipeline: Pipeline | None = None) -> None:
        """Delete the stored results of ``ids`` (queued on ``pipeline`` when given)."""
        if ids:
            target = pipeline if pipeline is not None else self.client
            target.delete(*(result_key(self.prefix, review_id) for review_id in ids))

    def fetch(self, ids: Sequence[str]) -> dict[str, Prediction]:
        """The stored predictions of those ``ids`` that have one."""
        if not ids:
            return {}
        raw_values = self.client.mget([result_key(self.prefix, review_id) for review_id in ids])
        return {
            review_id: Prediction.from_json(raw)
            for review_id, raw in zip(ids, raw_values, strict=True)
            if raw is not None
        }

    def last_stream_id(self) -> str:
        """The id of the newest stream entry (``0-0`` when empty): read from here to miss nothing new."""
        newest = self.client.xrevrange(self.stream, count=1)
        if not newest:
            return STREAM_START
        entry_id = newest[0][0]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def read_stream(
        self, after: str, block_ms: int, count: int = 1000, wanted: Container[str] | None = None
    ) -> tuple[str, list[tuple[str, Prediction]]]:
        """Wait up to ``block_ms`` for entries after ``after``; returns the new cursor and entries.

        With ``wanted``, only the entries of those review ids are parsed and returned: every
        client reads the one shared stream, mostly other clients' results.
        """
        response: Any = self.client.xread({self.stream: after}, count=count, block=block_ms)
        cursor = after
        entries: list[tuple[str, Prediction]] = []
        id_field, result_field = STREAM_FIELD_ID.encode(), STREAM_FIELD_RESULT.encode()
        for _stream, items in response or []:
            if items:
                last = items[-1][0]
                cursor = last.decode() if isinstance(last, bytes) else str(last)
            for _entry_id, fields in items:
                review_id = fields[id_field].decode()
                if wanted is None or review_id in wanted:
                    entries.append((review_id, Prediction.from_json(fields[result_field])))
        return cursor, entries

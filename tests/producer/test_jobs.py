"""producer.jobs: job data compressed at zlib level 1, and the RQ internals that relies on."""

from __future__ import annotations

import inspect
import zlib

from redis import Redis
from rq import Queue
from rq.job import Job

from producer import Client
from producer.jobs import JOB_DATA_COMPRESSION_LEVEL, ProducerJob
from sentiq.settings import Settings
from tests.producer.test_client import decode_job_data, queued_jobs


def test_rq_compresses_job_data_in_to_dict_and_creates_jobs_of_the_queue_class() -> None:
    # If a new RQ changes either, ProducerJob must follow (and this pin with it).
    assert "'data': zlib.compress(self.data)" in inspect.getsource(Job.to_dict)
    assert "self.job_class.create(" in inspect.getsource(Queue.create_job)


def test_submitted_job_data_is_compressed_at_level_1_and_reads_back(
    settings: Settings, redis_client: Redis
) -> None:
    texts = [f"review {n}: " + "a long and winding text about a film " * 30 for n in range(40)]
    with Client.from_settings(settings) as client:
        assert client.queue.job_class is ProducerJob
        ids = client.submit(texts)
    (job,) = queued_jobs(redis_client, settings)
    stored = job[b"data"]
    raw = zlib.decompress(stored)
    assert stored == zlib.compress(raw, JOB_DATA_COMPRESSION_LEVEL)
    assert stored != zlib.compress(raw)  # not RQ's default level
    _func, args, _kwargs = decode_job_data(job)
    assert [review["id"] for review in args[0]["reviews"]] == ids
    assert [review["text"] for review in args[0]["reviews"]] == texts

"""Deleting every key of one private queue/prefix name: after a test, a benchmark or the demo.

Never a flush: on a shared server only the keys of that one name go.
"""

from __future__ import annotations

from redis import Redis

_DELETE_CHUNK = 1000


def delete_namespace(client: Redis, namespace: str) -> None:
    """Delete the result store, the RQ queue, its registries and its jobs of one queue/prefix name."""
    from rq import Queue
    from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

    queue = Queue(namespace, connection=client)
    job_ids = set(queue.get_job_ids())
    for registry_class in (FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry):
        job_ids.update(registry_class(namespace, connection=client).get_job_ids())
    keys = [f"rq:job:{job_id}" for job_id in job_ids] + [f"rq:results:{job_id}" for job_id in job_ids]
    for pattern in (f"{namespace}:*", f"rq:*:{namespace}", f"rq:*:{namespace}:*"):
        keys.extend(key.decode() for key in client.scan_iter(match=pattern, count=1000))
    for start in range(0, len(keys), _DELETE_CHUNK):
        client.delete(*keys[start : start + _DELETE_CHUNK])
    client.srem("rq:queues", f"rq:queue:{namespace}")

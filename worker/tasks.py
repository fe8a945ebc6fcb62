"""The one task function sentiq jobs name (:data:`sentiq.contract.CLASSIFY_TASK`).

:class:`~worker.worker.SentiqWorker` never calls it: it batches jobs itself and runs the same
:class:`~worker.processing.Classifier`. The function exists so the name a job carries resolves
to real code, e.g. for RQ's own tooling or a plain ``rq worker`` with the JSON serializer, where
it loads the model from the environment's settings on first use.
"""

from __future__ import annotations

import functools
from typing import Any

from rq import get_current_job

from sentiq.contract import JobPayload
from sentiq.redis_connection import connect
from sentiq.settings import load_settings
from worker.processing import Classifier


@functools.cache
def _process_classifier() -> Classifier:
    """The model of this process, loaded on first use from the environment's settings."""
    from worker.assembly import build_classifier

    settings = load_settings()
    return build_classifier(settings, connect(settings.redis))


def classify_reviews(payload: dict[str, Any]) -> dict[str, object]:
    """Classify one job's reviews, publish them to the result store, return a small summary."""
    classifier = _process_classifier()
    decoded = JobPayload.decode([payload], {})
    job = get_current_job()
    outcomes, _ = classifier.classify([(job.id if job else "local", decoded)])
    classifier.publish(outcomes)
    return outcomes[0].summary

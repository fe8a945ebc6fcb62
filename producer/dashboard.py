"""rq-dashboard for sentiq: RQ's web dashboard, reading every job with the JSON serializer.

rq-dashboard 0.9.0 reads jobs with RQ's default serializer, which is pickle. On sentiq's JSON jobs
that fails (HTTP 500 on the job lists and, while a worker is busy, on the workers data), and on a
queue that other services can write it would unpickle whatever they put there. Its ``--json`` flag
(``RQ_DASHBOARD_JSON=true``) switches the queue and job views to JSON, but its workers view still
builds workers with the default serializer and fails on a busy worker's current job.

:func:`create_app` builds rq-dashboard's own Flask app with both fixed: the JSON serializer for
queues and jobs, and a worker class whose :meth:`~rq.Worker.all` reads with JSON. Run it with
``python -m producer dashboard`` (:func:`serve`; 127.0.0.1:9181 by default; delete and empty
buttons off unless ``--allow-delete``). rq-dashboard is a development extra
(``pip install rq-dashboard==0.9.0``). Torch-free.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from rq import Worker
from rq.serializers import JSONSerializer

from sentiq.errors import ConfigurationError
from sentiq.redis_connection import connect, read_password, redact_url
from sentiq.settings import Settings

if TYPE_CHECKING:
    from flask import Flask

#: The rq-dashboard release this module patches (pinned in the dev extra).
PINNED_RQ_DASHBOARD_VERSION = "0.9.0"
DEFAULT_PORT = 9181


class JSONWorker(Worker):
    """RQ's worker model with the JSON serializer, so a busy worker's current job reads as JSON."""

    @classmethod
    def all(
        cls,
        connection: Any = None,
        job_class: Any = None,
        queue_class: Any = None,
        queue: Any = None,
        serializer: Any = None,
    ) -> list[Any]:
        """Every registered worker, read with JSON unless told otherwise."""
        return list(super().all(connection, job_class, queue_class, queue, serializer or JSONSerializer))


def create_app(settings: Settings, *, allow_delete: bool = False, url_prefix: str = "") -> Flask:
    """rq-dashboard's Flask app for ``settings``' Redis, reading jobs and workers as JSON.

    Raises :class:`~sentiq.errors.ConfigurationError` when rq-dashboard is not installed or is
    another version than the one this module was checked against.
    """
    try:
        from rq_dashboard import web
        from rq_dashboard.cli import make_flask_app
        from rq_dashboard.version import VERSION
    except ImportError:
        raise ConfigurationError(
            f"the dashboard needs rq-dashboard: pip install 'rq-dashboard=={PINNED_RQ_DASHBOARD_VERSION}'"
        ) from None
    if VERSION != PINNED_RQ_DASHBOARD_VERSION:
        raise ConfigurationError(
            f"rq-dashboard {VERSION} is installed; sentiq's fixes were written for "
            f"{PINNED_RQ_DASHBOARD_VERSION}: pip install 'rq-dashboard=={PINNED_RQ_DASHBOARD_VERSION}'"
        )
    # What its --json flag sets: queues, job lists and job details read with JSON.
    web.config.serializer = JSONSerializer
    # Its workers data calls Worker.all() without a serializer; this class defaults it to JSON.
    web.Worker = JSONWorker  # type: ignore[attr-defined]
    app: Flask = make_flask_app(None, None, None, url_prefix)
    app.config["RQ_DASHBOARD_REDIS_URL"] = settings.redis.url
    # rq-dashboard opens its own connections from these; sentiq's password file or variable wins.
    app.config["RQ_DASHBOARD_REDIS_PASSWORD"] = read_password(settings.redis)
    app.config["RQ_DASHBOARD_DISABLE_DELETE"] = not allow_delete
    web.setup_rq_connection(app)
    return app


def serve(settings: Settings, host: str, port: int, *, allow_delete: bool = False) -> None:
    """Run the dashboard on ``host:port`` until interrupted (Flask's own server).

    Redis is pinged first: a wrong password or an unreachable server fails here (exit 2 or 1),
    not on every page.
    """
    app = create_app(settings, allow_delete=allow_delete)
    connect(settings.redis).close()
    print(
        f"rq-dashboard for {redact_url(settings.redis.url)} on http://{host}:{port}/",
        file=sys.stderr,
        flush=True,
    )
    app.run(host=host, port=port)

"""``python -m worker.healthcheck``: exit 0 when the worker's model is loaded and it is alive.

The worker touches ``SENTIQ_WORKER_READY_FILE`` once its model is warm and at every heartbeat;
the file is fresh while the worker is alive and is removed when it stops.
"""

from __future__ import annotations

import sys
import time

from pydantic import ValidationError

from sentiq.settings import Settings, WorkerSettings, describe_validation_error, load_settings


def idle_heartbeat_interval(settings: WorkerSettings) -> int:
    """Seconds between heartbeats (and ready-file touches) of an idle worker."""
    return settings.heartbeat_ttl_s


def is_ready(settings: Settings, now: float | None = None) -> tuple[bool, str]:
    """Whether the ready file exists and was touched recently enough, and why not."""
    path = settings.worker.ready_file
    if path is None:
        return False, "SENTIQ_WORKER_READY_FILE is not set"
    try:
        age = (now or time.time()) - path.stat().st_mtime
    except FileNotFoundError:
        return False, f"{path} does not exist: model not loaded yet, or worker stopped"
    # An idle worker heartbeats every idle_heartbeat_interval seconds; allow two missed beats
    # plus the longest batch we expect.
    limit = 3 * idle_heartbeat_interval(settings.worker) + 60
    if age > limit:
        return False, f"{path} is {age:.0f}s old (limit {limit}s): worker looks stuck"
    return True, f"ready ({age:.0f}s since last heartbeat)"


def main() -> int:
    """Exit 0 when ready; 1 with the reason on stderr when not, or when the settings are invalid."""
    try:
        settings = load_settings()
    except ValidationError as error:
        print(f"error: {describe_validation_error(error)}", file=sys.stderr)
        return 1
    ready, reason = is_ready(settings)
    print(reason, file=sys.stdout if ready else sys.stderr)
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main())

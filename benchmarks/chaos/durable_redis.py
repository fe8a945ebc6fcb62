"""A private ``redis-server`` with an append-only file, that can be killed and restarted on its port.

:class:`~sentiq.embedded_redis.EmbeddedRedis` keeps nothing on disk, so a restart would start
empty. Here the data folder outlives the process: a restart after SIGKILL reloads the
append-only file, as a Redis with ``appendonly yes`` does in production (the compose file's
settings: fsync every second, which loses nothing when only the process dies).
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from sentiq.embedded_redis import find_redis_server, free_port
from sentiq.errors import RedisUnavailableError


class DurableRedis:
    """A ``redis-server`` child on 127.0.0.1 whose data lives in ``folder`` across restarts."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients connect with."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        """The server's log file (appended to by every start)."""
        return self.folder / "redis.log"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 30.0) -> DurableRedis:
        """Start the server on :attr:`port` and wait until it answers PING (after loading its data)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.folder),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        # A session of its own: a terminal's Ctrl-C reaches only the harness, which stops it last.
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        client = Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            while True:
                try:
                    # PING answers LOADING while the append-only file is read back: wait past it.
                    client.ping()
                    return self
                except RedisError as error:
                    if self._process.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        raise RedisUnavailableError(
                            f"redis-server on port {self.port} did not start: {error} (see {self.log_path})"
                        ) from error
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL the server, as a crash or an OOM kill would; its data folder stays."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s); the data folder stays."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)

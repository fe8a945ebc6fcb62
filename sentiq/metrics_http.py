"""Serving a Prometheus registry over HTTP: shared by the worker's metrics and the queue exporter.

prometheus-client is imported only when serving starts, so importing this module (and the
producer package) needs nothing beyond sentiq's base dependencies.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from sentiq.errors import ConfigurationError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

#: What to install when prometheus-client is missing.
INSTALL_HINT = "pip install 'prometheus-client==0.26.0' (it comes with sentiq's worker extra)"


class MetricsServer:
    """A running ``/metrics`` endpoint on a daemon thread; :meth:`close` stops it."""

    def __init__(self, server: WSGIServer, host: str) -> None:
        self._server = server
        self.host = host
        self.port = int(server.server_port)

    @property
    def url(self) -> str:
        """Where Prometheus scrapes it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    """Serve ``registry`` on ``http://host:port/metrics`` (port 0: any free port).

    Raises :class:`~sentiq.errors.ConfigurationError` when the port cannot be bound (in use, or
    a privileged port) or prometheus-client is not installed.
    """
    try:
        from prometheus_client import start_http_server
    except ImportError:
        raise ConfigurationError(f"serving metrics needs prometheus-client: {INSTALL_HINT}") from None
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        raise ConfigurationError(
            f"cannot serve metrics on {host}:{port}: {error.strerror or error}"
        ) from None
    served = MetricsServer(server, host)
    log.info("metrics on %s", served.url)
    return served

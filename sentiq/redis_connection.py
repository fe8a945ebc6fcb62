"""Opening Redis connections from a URL, with a clear error when the server is not there."""

from __future__ import annotations

from redis import Redis
from redis.exceptions import RedisError

from sentiq.errors import RedisUnavailableError
from sentiq.settings import RedisSettings


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for logs and error messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0] if ":" in credentials else ""
    return f"{scheme}://{user}:***@{host}"


def connect(settings: RedisSettings, *, check: bool = True) -> Redis:
    """A client for ``settings.url`` (``redis://``, ``rediss://`` or ``unix://``).

    With ``check`` the server is pinged once, so a wrong URL or password fails here with a
    :class:`RedisUnavailableError` instead of deep inside the first enqueue.
    """
    client: Redis = Redis.from_url(
        settings.url,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        health_check_interval=30,
    )
    if check:
        try:
            client.ping()
        except RedisError as error:
            client.close()
            raise RedisUnavailableError(
                f"cannot reach Redis at {redact_url(settings.url)}: {error}"
            ) from error
    return client

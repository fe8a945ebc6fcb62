"""Opening Redis connections from the settings, without ever printing a password.

A password can reach sentiq four ways: in the URL's user part (``redis://:pw@host``,
``redis://user:pw@host``), as a ``?password=`` query value, in ``SENTIQ_REDIS_PASSWORD`` or in
the file named by ``SENTIQ_REDIS_PASSWORD_FILE``. :func:`connect` uses the file, else the variable,
else the URL (a username in the URL is kept either way). :func:`redact_url` and
:func:`redact_secrets` keep every one of them out of logs and error messages.
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from redis import ConnectionPool, Redis
from redis.connection import parse_url
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError, ResponseError

from sentiq.errors import (
    ConfigurationError,
    InvalidRedisUrlError,
    RedisAuthenticationError,
    RedisUnavailableError,
)
from sentiq.settings import RedisSettings, redis_url_problem

log = logging.getLogger(__name__)

REDACTED = "***"
#: A ``password=`` query parameter's value (up to the next parameter or fragment).
_QUERY_PASSWORD = re.compile(r"([?&;]password=)[^&;#]*", re.IGNORECASE)
#: Seconds between the automatic health checks of idle pooled connections.
HEALTH_CHECK_INTERVAL_S = 30


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for logs and error messages.

    Hides the user part's password (keeping the username), a lone user part (``redis://pw@host``,
    in case it was meant as a password), a port that is not a number (``redis://:pw``) and every
    ``password=`` query value. When an ``@`` also
    occurs later in the URL, everything up to the last one is hidden: too much rather than too
    little.
    """
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user, colon, _password = credentials.partition(":")
        shown_user = user if colon and not re.search(r"[/?#]", user) else ""
        rest = f"{shown_user}:{REDACTED}@{host}"
    elif sep:
        # "redis://:pw" (no "@") parses as a host with a bad port: hide any port that is not a number.
        end = next((index for index, char in enumerate(rest) if char in "/?#"), len(rest))
        host, colon, port = rest[:end].rpartition(":")
        if colon and port and "]" not in port and not port.isdigit():
            rest = f"{host}:{REDACTED}{rest[end:]}"
    return _QUERY_PASSWORD.sub(rf"\g<1>{REDACTED}", f"{scheme}{sep}{rest}")


def url_has_password(url: str) -> bool:
    """Whether ``url`` carries a password (in its user part or as a ``password=`` query value)."""
    try:
        parts = urlsplit(url)
        if parts.password:
            return True
    except ValueError:
        pass
    _scheme, _sep, rest = url.partition("://")
    query = rest.partition("?")[2].partition("#")[0]
    return any(key.lower() == "password" and value for key, value in parse_qsl(query, keep_blank_values=True))


def url_passwords(url: str) -> list[str]:
    """Every password spelled in ``url`` (raw and percent-decoded), for :func:`redact_secrets`."""
    found: list[str] = []
    _scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        credentials = rest.rpartition("@")[0]
        user, colon, password = credentials.partition(":")
        found.append(password if colon else user)
    found.extend(match.group(0).split("=", 1)[1] for match in _QUERY_PASSWORD.finditer(url))
    return [secret for value in found for secret in {value, unquote(value)} if secret]


def read_password(settings: RedisSettings) -> str | None:
    """The password :func:`connect` uses instead of the URL's: the file's content, else the variable.

    Raises :class:`~sentiq.errors.ConfigurationError` when the password file cannot be read or
    is empty.
    """
    if settings.password_file is not None:
        path = Path(settings.password_file)
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else type(error).__name__
            raise ConfigurationError(
                f"cannot read the Redis password file {path} (SENTIQ_REDIS_PASSWORD_FILE): {reason}"
            ) from None
        if not secret:
            raise ConfigurationError(f"the Redis password file {path} (SENTIQ_REDIS_PASSWORD_FILE) is empty")
        return secret
    if settings.password is not None:
        return settings.password.get_secret_value()
    return None


def redact_secrets(text: str, settings: RedisSettings) -> str:
    """``text`` (e.g. a redis-py error message) with every password ``settings`` hold replaced by ``***``.

    The URL itself is also redacted wherever it occurs whole.
    """
    text = text.replace(settings.url, redact_url(settings.url))
    secrets = url_passwords(settings.url)
    if settings.password is not None:
        secrets.append(settings.password.get_secret_value())
    if settings.password_file is not None:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            secrets.append(Path(settings.password_file).read_text(encoding="utf-8").strip())
    # Longest first, so a password that contains another is hidden whole.
    for secret in sorted({secret for secret in secrets if secret}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def connect(settings: RedisSettings, *, check: bool = True) -> Redis:
    """A client for ``settings.url`` (``redis://``, ``rediss://`` or ``unix://``).

    The password comes from ``settings.password_file``, else ``settings.password``, else the
    URL. Raises :class:`~sentiq.errors.InvalidRedisUrlError` for a URL redis-py cannot use and
    :class:`~sentiq.errors.ConfigurationError` for an unreadable password file. With ``check``
    the server is pinged once, so a wrong URL or password fails here with a
    :class:`RedisUnavailableError` instead of deep inside the first enqueue (a
    :class:`~sentiq.errors.RedisAuthenticationError` when the credentials were refused). No
    message names a password.
    """
    # Settings built with model_copy() skip validation: check the URL here too.
    problem = redis_url_problem(settings.url)
    if problem is not None:
        raise InvalidRedisUrlError(f"invalid Redis URL {redact_url(settings.url)}: {problem}")
    try:
        options: dict[str, Any] = parse_url(settings.url)  # type: ignore[no-untyped-call]
    except ValueError as error:
        raise InvalidRedisUrlError(
            f"invalid Redis URL {redact_url(settings.url)}: {redact_secrets(str(error), settings)}"
        ) from None
    password = read_password(settings)
    if password is not None:
        # redis-py lets the URL's options win over keyword arguments, so the password is set here.
        options["password"] = password
    pool = ConnectionPool(
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        **options,
    )
    client = Redis.from_pool(pool)
    if check:
        try:
            client.ping()
        except AuthenticationError as error:
            client.close()
            raise credentials_refused(error, settings) from None
        except NoPermissionError as error:
            client.close()
            raise RedisAuthenticationError(
                f"Redis at {redact_url(settings.url)} refused this user PING "
                f"({redact_secrets(str(error), settings)}); sentiq needs an ACL user that may run "
                "RQ's commands (for example +@all -@dangerous on ~* and &*)"
            ) from None
        except RedisError as error:
            client.close()
            raise RedisUnavailableError(
                f"cannot reach Redis at {redact_url(settings.url)}: {redact_secrets(str(error), settings)}"
            ) from None
    return client


def credentials_refused(
    error: AuthenticationError, settings: RedisSettings | None = None
) -> RedisAuthenticationError:
    """The error for Redis refusing the credentials (at connect, or on a reconnect after Redis
    came back with another password), naming ``settings``' URL when given; its message never
    names the password (redis-py's reasons do not quote it)."""
    where = "Redis" if settings is None else f"Redis at {redact_url(settings.url)}"
    reason = str(error) if settings is None else redact_secrets(str(error), settings)
    return RedisAuthenticationError(
        f"{where} refused the credentials ({reason}); check SENTIQ_REDIS_PASSWORD_FILE, "
        "SENTIQ_REDIS_PASSWORD and the URL's user and password"
    )


def eviction_problem(client: Redis) -> str | None:
    """Why ``client``'s Redis may silently drop sentiq's keys, or ``None`` when it will not.

    A Redis with ``maxmemory`` set and a ``maxmemory-policy`` other than ``noeviction`` evicts
    keys when full: queued jobs and stored results vanish without an error (``volatile-*``
    policies still take results, which have a TTL). With ``noeviction`` a full Redis refuses
    writes instead, which sentiq reports. ``None`` too when the server does not allow
    ``CONFIG GET`` (a managed Redis, an ACL user without it): that is logged at debug level.
    """
    try:
        config = client.config_get("maxmemory*")
    except ResponseError as error:
        log.debug("cannot read Redis's maxmemory settings (CONFIG GET refused: %s); not checking", error)
        return None
    maxmemory_text = _text(config.get("maxmemory", "0"))
    policy = _text(config.get("maxmemory-policy", "noeviction"))
    try:
        maxmemory = int(maxmemory_text)
    except ValueError:
        log.debug("unexpected maxmemory value %r; not checking", maxmemory_text)
        return None
    if maxmemory <= 0 or policy == "noeviction":
        return None
    return (
        f"maxmemory is {maxmemory} bytes with maxmemory-policy {policy}, so Redis evicts keys "
        "(queued jobs, results) when full instead of refusing writes"
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

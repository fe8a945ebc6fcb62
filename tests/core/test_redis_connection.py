"""sentiq.redis_connection and RedisSettings: URLs, passwords that are never printed, eviction."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from redis import Redis

from producer import Client
from sentiq.errors import ConfigurationError, InvalidRedisUrlError, RedisUnavailableError
from sentiq.redis_connection import connect, eviction_problem, redact_secrets, redact_url, url_has_password
from sentiq.settings import RedisSettings, Settings, load_settings
from stack.embedded_redis import EmbeddedRedis, free_port

SECRET = "Sup3r-s3cret"


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        (f"redis://:{SECRET}@host:6379/0", "redis://:***@host:6379/0"),
        (f"redis://alice:{SECRET}@host:6379/0", "redis://alice:***@host:6379/0"),
        (f"redis://{SECRET}@host/0", "redis://:***@host/0"),
        (f"redis://host:6379/0?password={SECRET}", "redis://host:6379/0?password=***"),
        (
            f"rediss://host/0?db=1&PASSWORD={SECRET}&ssl_cert_reqs=none",
            "rediss://host/0?db=1&PASSWORD=***&ssl_cert_reqs=none",
        ),
        (f"unix:///run/redis.sock?password={SECRET}&db=2", "unix:///run/redis.sock?password=***&db=2"),
        (f"redis://bob:{SECRET}@host/0?password={SECRET}", "redis://bob:***@host/0?password=***"),
        ("redis://:p@ss@host/0", "redis://:***@host/0"),
        ("redis://host:6379/0", "redis://host:6379/0"),
    ],
)
def test_redact_url_hides_every_password_form(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
    assert SECRET not in redact_url(url)


@pytest.mark.parametrize(
    ("url", "has"),
    [
        (f"redis://:{SECRET}@h/0", True),
        (f"redis://u:{SECRET}@h/0", True),
        (f"redis://h/0?password={SECRET}", True),
        ("redis://h/0?password=", False),
        ("redis://alice@h/0", False),
        ("redis://h:6379/0", False),
        ("unix:///run/redis.sock?db=0", False),
    ],
)
def test_url_has_password(url: str, has: bool) -> None:
    assert url_has_password(url) is has


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:6379/0", "must start with redis://, rediss:// or unix://, not 'http'"),
        ("127.0.0.1:6379", "must start with redis://"),
        (f"redis://:{SECRET}@host:notaport/0", "malformed"),
        (f"redis://:{SECRET}", "malformed"),
        ("redis://host:6379/zero", "database number"),
        ("redis:///0", "names no host"),
        ("unix://", "socket path"),
    ],
)
def test_unusable_urls_are_refused_without_echoing_them(url: str, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        load_settings(redis={"url": url})
    assert reason in str(caught.value)
    assert SECRET not in str(caught.value)
    with pytest.raises(InvalidRedisUrlError) as direct:
        Client(url)
    assert reason in str(direct.value) and SECRET not in str(direct.value)
    assert "\n" not in str(direct.value)


def test_password_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("SENTIQ_REDIS_PASSWORD", SECRET)
    monkeypatch.setenv("SENTIQ_REDIS_PASSWORD_FILE", str(tmp_path / "pw"))
    settings = Settings()
    assert settings.redis.password == SecretStr(SECRET)
    assert settings.redis.password_file == tmp_path / "pw"
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    monkeypatch.setenv("SENTIQ_REDIS_PASSWORD", "")  # as in a copied .env.example
    assert Settings().redis.password is None


@pytest.fixture(scope="module")
def protected() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(password=SECRET) as server:
        yield server


def bare_url(server: EmbeddedRedis) -> str:
    return f"redis://127.0.0.1:{server.port}/0"


def test_password_precedence_file_then_setting_then_url(protected: EmbeddedRedis, tmp_path: Path) -> None:
    good_file, bad_file = tmp_path / "good", tmp_path / "bad"
    good_file.write_text(f"  {SECRET}\n", encoding="utf-8")
    bad_file.write_text("wrong-from-file\n", encoding="utf-8")
    wrong_url = f"redis://:wrong-in-url@127.0.0.1:{protected.port}/0"
    working = [
        RedisSettings(url=bare_url(protected), password=SecretStr(SECRET)),
        RedisSettings(url=wrong_url, password=SecretStr(SECRET)),
        RedisSettings(url=wrong_url, password=SecretStr("wrong-setting"), password_file=good_file),
        RedisSettings(url=f"{bare_url(protected)}?password={SECRET}"),
    ]
    for settings in working:
        client = connect(settings)
        assert client.ping()
        client.close()
    with pytest.raises(RedisUnavailableError) as caught:
        connect(RedisSettings(url=bare_url(protected), password=SecretStr(SECRET), password_file=bad_file))
    assert "wrong-from-file" not in str(caught.value) and SECRET not in str(caught.value)


def test_unreadable_or_empty_password_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(ConfigurationError, match=r"cannot read the Redis password file .*missing"):
        connect(RedisSettings(password_file=missing), check=False)
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="is empty"):
        connect(RedisSettings(password_file=empty), check=False)


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{SECRET}x@127.0.0.1:{{port}}/0",
        f"redis://default:{SECRET}x@127.0.0.1:{{port}}/0",
        f"redis://127.0.0.1:{{port}}/0?password={SECRET}x",
    ],
)
def test_wrong_password_errors_never_show_it(protected: EmbeddedRedis, url: str) -> None:
    with pytest.raises(RedisUnavailableError) as caught:
        connect(RedisSettings(url=url.format(port=protected.port)))
    assert SECRET not in str(caught.value)


def test_redact_secrets_scrubs_every_known_password(tmp_path: Path) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-the-file\n", encoding="utf-8")
    settings = RedisSettings(
        url="redis://u:in-the-url@h/0?password=in-the-query",
        password=SecretStr("from-the-setting"),
        password_file=secret_file,
    )
    text = f"failed {settings.url}; AUTH in-the-url / in-the-query / from-the-setting / from-the-file"
    scrubbed = redact_secrets(text, settings)
    for secret in ("in-the-url", "in-the-query", "from-the-setting", "from-the-file"):
        assert secret not in scrubbed
    assert "redis://u:***@h/0?password=***" in scrubbed


def test_eviction_problem_flags_policies_that_evict(caplog: pytest.LogCaptureFixture) -> None:
    with EmbeddedRedis() as server:
        admin = Redis.from_url(server.url)
        try:
            assert eviction_problem(admin) is None  # no maxmemory
            admin.config_set("maxmemory-policy", "allkeys-lru")
            assert eviction_problem(admin) is None  # a policy without a limit never evicts
            admin.config_set("maxmemory", 100 * 1024 * 1024)
            problem = eviction_problem(admin)
            assert problem is not None and "allkeys-lru" in problem and "104857600" in problem
            with caplog.at_level(logging.WARNING, logger="producer.client"):
                Client(server.url).close()
            assert any("REDIS MAY DROP QUEUED REVIEWS" in record.getMessage() for record in caplog.records)
            caplog.clear()
            allowed = load_settings(redis={"url": server.url, "allow_eviction": True})
            with caplog.at_level(logging.WARNING, logger="producer.client"):
                Client(settings=allowed).close()
            assert caplog.records == []
            admin.config_set("maxmemory-policy", "noeviction")
            assert eviction_problem(admin) is None
        finally:
            admin.close()


def test_eviction_problem_is_none_when_config_is_not_allowed() -> None:
    with EmbeddedRedis() as server:
        admin = Redis.from_url(server.url)
        admin.config_set("maxmemory", 100 * 1024 * 1024)
        admin.config_set("maxmemory-policy", "allkeys-lru")
        admin.acl_setuser(
            "limited", enabled=True, passwords=["+limited-pw"], keys=["*"], commands=["+@all", "-config"]
        )
        limited = Redis.from_url(f"redis://limited:limited-pw@127.0.0.1:{server.port}/0")
        try:
            assert eviction_problem(admin) is not None
            assert eviction_problem(limited) is None
        finally:
            limited.close()
            admin.close()


def test_unreachable_with_password_in_query_never_shows_it() -> None:
    settings = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0?password={SECRET}", socket_timeout_s=1)
    with pytest.raises(RedisUnavailableError) as caught:
        connect(settings)
    assert SECRET not in str(caught.value) and "password=***" in str(caught.value)

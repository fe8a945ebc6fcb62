"""``python -m producer`` as real subprocesses against a real Redis."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from redis import Redis

from sentiq.contract import JobPayload, Prediction
from sentiq.settings import Settings
from stack.embedded_redis import EmbeddedRedis, free_port
from tests.conftest import REPO_ROOT, TEST_SAMPLE
from tests.support.producer_fakes import FakeWorker, store_for


def run_cli(
    settings: Settings,
    *args: str,
    cwd: Path,
    stdin: str | None = None,
    timeout: float = 60,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m producer`` in ``cwd`` with the test's Redis, queue and key prefix."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SENTIQ_")}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        SENTIQ_REDIS_URL=settings.redis.url,
        SENTIQ_QUEUE_NAME=settings.queue.name,
        SENTIQ_QUEUE_KEY_PREFIX=settings.queue.key_prefix,
    )
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "producer", *args],
        check=False,
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def queued_review_ids(redis_client: Redis, settings: Settings) -> list[str]:
    from rq import Queue
    from rq.serializers import JSONSerializer

    queue = Queue(settings.queue.name, connection=redis_client, serializer=JSONSerializer)
    ids: list[str] = []
    for job in queue.get_jobs():
        ids.extend(review["id"] for review in JobPayload.decode(job.args, job.kwargs).reviews)
    return ids


def assert_clean_error(result: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert f"error: {message}" in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["get", "x"],
        ["status"],
        ["classify", "a review"],
        ["dashboard", "--port", "0"],
        ["exporter", "--port", "0"],
    ],
)
def test_refused_credentials_exit_2_at_once_for_every_command(
    settings: Settings, tmp_path: Path, command: list[str]
) -> None:
    with EmbeddedRedis(password="cli-right-pass") as server:
        wrong = server.url.replace("cli-right-pass", "cli-wrong-pass")
        result = run_cli(settings, *command, cwd=tmp_path, timeout=60, extra_env={"SENTIQ_REDIS_URL": wrong})
    assert_clean_error(result, 2, "Redis at redis://:***@127.0.0.1:")
    assert "refused the credentials" in result.stderr
    assert "cli-wrong-pass" not in result.stderr + result.stdout


def test_help(settings: Settings, tmp_path: Path) -> None:
    result = run_cli(settings, "--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("enqueue", "get", "classify", "stream", "--redis-url", "--queue"):
        assert command in result.stdout
    enqueue_help = run_cli(settings, "enqueue", "--help", cwd=tmp_path)
    assert "--wait" in enqueue_help.stdout and "--output" in enqueue_help.stdout


def test_enqueue_csv_prints_ids_and_shows_progress(
    settings: Settings, redis_client: Redis, tmp_path: Path
) -> None:
    (tmp_path / "in.csv").write_text("id,review\nc-1,first review\nc-2,second review\n", encoding="utf-8")
    result = run_cli(settings, "enqueue", "in.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["c-1", "c-2"]
    assert "enqueue [" in result.stderr and "2/2" in result.stderr
    assert queued_review_ids(redis_client, settings) == ["c-1", "c-2"]


def test_enqueue_jsonl_text_and_stdin(settings: Settings, redis_client: Redis, tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"id": "j-1", "text": "one"}\n{"review": "two"}\n', encoding="utf-8")
    (tmp_path / "in.txt").write_text("line one\n\nline two\nline three\n", encoding="utf-8")
    from_jsonl = run_cli(settings, "enqueue", "in.jsonl", "--no-progress", cwd=tmp_path)
    from_text = run_cli(settings, "enqueue", "in.txt", cwd=tmp_path)
    from_stdin = run_cli(settings, "enqueue", "-", cwd=tmp_path, stdin="from stdin\nand more\n")
    for result in (from_jsonl, from_text, from_stdin):
        assert result.returncode == 0, result.stderr
    assert from_jsonl.stderr == ""
    jsonl_ids = from_jsonl.stdout.split()
    assert jsonl_ids[0] == "j-1" and str(uuid.UUID(jsonl_ids[1])) == jsonl_ids[1]
    assert len(from_text.stdout.split()) == 3
    assert len(from_stdin.stdout.split()) == 2
    assert len(queued_review_ids(redis_client, settings)) == 7


def test_enqueue_wait_writes_results(settings: Settings, redis_client: Redis, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("id,review\nw-1,a good one\nw-2,a bad one\n", encoding="utf-8")
    with FakeWorker(settings):
        to_file = run_cli(settings, "enqueue", "in.csv", "--wait", "--output", "out.csv", cwd=tmp_path)
        to_stdout = run_cli(settings, "enqueue", "in.csv", "--wait", "--timeout", "20", cwd=tmp_path)
    assert to_file.returncode == 0, to_file.stderr
    assert to_file.stdout == ""
    with (tmp_path / "out.csv").open(encoding="utf-8", newline="") as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    assert rows["w-1"]["label"] == "positive" and rows["w-2"]["label"] == "negative"
    assert set(rows["w-1"]) == {"id", "label", "score", "model", "error"}
    assert to_stdout.returncode == 0, to_stdout.stderr
    assert {json.loads(line)["id"] for line in to_stdout.stdout.splitlines()} == {"w-1", "w-2"}


def test_get_prints_results_and_reports_missing_ids(
    settings: Settings, redis_client: Redis, tmp_path: Path
) -> None:
    store_for(settings, redis_client).publish([Prediction(id="have", label="negative", score=0.8)])
    found = run_cli(settings, "get", "have", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["label"] == "negative"
    partial = run_cli(settings, "get", "have", "nope", cwd=tmp_path)
    assert_clean_error(partial, 1, "no result for 1 id(s): nope")
    assert json.loads(partial.stdout)["id"] == "have"


def test_classify_prints_labels_and_json(settings: Settings, tmp_path: Path) -> None:
    with FakeWorker(settings):
        plain = run_cli(settings, "classify", "a good film", "a\nboring  film", cwd=tmp_path)
        as_json = run_cli(settings, "classify", "--json", "good", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines() == ["positive  0.875  a good film", "negative  0.875  a boring film"]
    assert json.loads(as_json.stdout)["label"] == "positive"


def test_classify_with_review_errors_exits_1(settings: Settings, tmp_path: Path) -> None:
    with FakeWorker(settings):
        result = run_cli(settings, "classify", "good", "FAIL", cwd=tmp_path)
    assert_clean_error(result, 1, "1 of 2 review(s) could not be classified")
    assert result.stdout.splitlines()[1].startswith("error  fake failure")


def test_stream_prints_predictions_and_a_summary(settings: Settings, tmp_path: Path) -> None:
    with FakeWorker(settings):
        result = run_cli(settings, "stream", str(TEST_SAMPLE), "--limit", "40", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum(" right  | " in line or " WRONG  | " in line for line in lines) == 40
    assert "reviews:     40 (0 error(s))" in result.stdout
    assert "accuracy:" in result.stdout and "reviews/s end to end" in result.stdout and "p95" in result.stdout


def test_bad_inputs_exit_2(settings: Settings, tmp_path: Path) -> None:
    assert_clean_error(
        run_cli(settings, "enqueue", "missing.csv", cwd=tmp_path), 2, "cannot read missing.csv"
    )
    (tmp_path / "bad.csv").write_text('review\nfine\n"   "\n', encoding="utf-8")
    assert_clean_error(
        run_cli(settings, "enqueue", "bad.csv", cwd=tmp_path), 2, "bad.csv line 3: review text is empty"
    )
    (tmp_path / "dup.jsonl").write_text(
        '{"id": "d", "text": "a"}\n{"id": "d", "text": "b"}\n', encoding="utf-8"
    )
    assert_clean_error(
        run_cli(settings, "enqueue", "dup.jsonl", cwd=tmp_path),
        2,
        "dup.jsonl line 2: duplicate id 'd' (first on line 1)",
    )
    assert_clean_error(run_cli(settings, "enqueue", "x.json", cwd=tmp_path), 2, "cannot tell the format")
    usage = run_cli(settings, "enqueue", "x.txt", "--output", "o.csv", cwd=tmp_path)
    assert usage.returncode == 2 and "--output needs --wait" in usage.stderr


def test_unreachable_redis_exits_1_fast(settings: Settings, tmp_path: Path) -> None:
    env_settings = settings.model_copy(
        update={"redis": settings.redis.model_copy(update={"url": f"redis://127.0.0.1:{free_port()}/0"})}
    )
    result = run_cli(
        env_settings, "get", "x", cwd=tmp_path, timeout=15, extra_env={"SENTIQ_REDIS_SOCKET_TIMEOUT_S": "1"}
    )
    assert_clean_error(result, 1, "cannot reach Redis at redis://127.0.0.1:")


def test_results_timeout_exits_1(settings: Settings, tmp_path: Path) -> None:
    result = run_cli(settings, "classify", "--timeout", "0.3", "nobody answers", cwd=tmp_path)
    assert_clean_error(result, 1, "1 result(s) missing after 0.3s")


def test_invalid_settings_exit_2(settings: Settings, tmp_path: Path) -> None:
    result = run_cli(settings, "--queue", "", "get", "x", cwd=tmp_path)
    assert_clean_error(result, 2, "invalid setting queue.name (SENTIQ_QUEUE_NAME)")


@pytest.mark.parametrize("args", [["enqueue"], ["get"], ["frobnicate"], ["stream", "f.csv", "--limit", "0"]])
def test_usage_errors_exit_2(settings: Settings, tmp_path: Path, args: list[str]) -> None:
    assert run_cli(settings, *args, cwd=tmp_path).returncode == 2


def test_password_on_the_command_line_is_warned_about_and_never_printed(
    settings: Settings, tmp_path: Path
) -> None:
    url = f"redis://:cli-s3cret@127.0.0.1:{free_port()}/0"
    result = run_cli(
        settings,
        "--redis-url",
        url,
        "get",
        "x",
        cwd=tmp_path,
        timeout=15,
        extra_env={"SENTIQ_REDIS_SOCKET_TIMEOUT_S": "1"},
    )
    assert result.returncode == 1
    assert "warning: --redis-url carries a password" in result.stderr
    assert "SENTIQ_REDIS_PASSWORD_FILE" in result.stderr
    assert "cli-s3cret" not in result.stderr + result.stdout
    assert "error: cannot reach Redis at redis://:***@127.0.0.1:" in result.stderr


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "http://127.0.0.1:6379/0",
            "the Redis URL must start with redis://, rediss:// or unix://, not 'http'",
        ),
        ("redis://:cli-s3cret@host:port/0", "the Redis URL is malformed"),
    ],
)
def test_unusable_redis_url_is_one_clean_line(
    settings: Settings, tmp_path: Path, url: str, message: str
) -> None:
    result = run_cli(settings, "get", "x", cwd=tmp_path, extra_env={"SENTIQ_REDIS_URL": url})
    assert_clean_error(result, 2, "invalid setting redis.url (SENTIQ_REDIS_URL): " + message)
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cli-s3cret" not in result.stderr


def test_password_from_a_file_is_used(settings: Settings, tmp_path: Path) -> None:
    with EmbeddedRedis(password="file-s3cret") as server:
        password_file = tmp_path / "redis-password"
        password_file.write_text("file-s3cret\n", encoding="utf-8")
        on_server = settings.model_copy(
            update={"redis": settings.redis.model_copy(update={"url": f"redis://127.0.0.1:{server.port}/0"})}
        )
        result = run_cli(
            on_server,
            "enqueue",
            "-",
            cwd=tmp_path,
            stdin="A review behind a password\n",
            extra_env={"SENTIQ_REDIS_PASSWORD_FILE": str(password_file)},
        )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == 1
    assert "warning" not in result.stderr

"""The compose stack's optional `monitoring` profile: the queue exporter and a Prometheus scraping workers.

Resolved with the real Docker Compose CLI for every supported file combination, as the rest of the
stack is; the scrape configuration is checked against the services and ports it names.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.deploy.test_compose import COMBINATIONS, compose_cli, run_compose_config
from tests.support.compose_local import REPO_ROOT, as_list, as_mapping

__all__ = ["compose_cli"]  # the fixture, shared with test_compose.py


def monitored(cli: str, files: tuple[str, ...]) -> dict[str, Any]:
    result = run_compose_config(
        cli, files, SENTIQ_REDIS_PASSWORD="test-password", COMPOSE_PROFILES="monitoring"
    )
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model


@pytest.mark.parametrize("files", COMBINATIONS, ids="+".join)
def test_monitoring_profile_validates_and_scrapes_every_worker(
    compose_cli: str, files: tuple[str, ...]
) -> None:
    services = monitored(compose_cli, files)["services"]
    assert {"exporter", "prometheus"} <= set(services)
    scrape = yaml.safe_load((REPO_ROOT / "compose" / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    (workers_sd,) = jobs["sentiq-workers"]["dns_sd_configs"]
    workers = {name: svc for name, svc in services.items() if name.startswith("worker")}
    assert set(workers) <= set(workers_sd["names"]), "a worker service Prometheus does not scrape"
    for svc in workers.values():
        env = as_mapping(svc["environment"])
        assert int(env["SENTIQ_WORKER_METRICS_PORT"]) == workers_sd["port"]
        assert env["SENTIQ_WORKER_METRICS_HOST"] == "0.0.0.0"
    exporter = services["exporter"]
    command = as_list(exporter["command"])
    assert command[:4] == ["python", "-m", "producer", "exporter"]
    assert jobs["sentiq-queues"]["static_configs"][0]["targets"] == [
        f"exporter:{command[command.index('--port') + 1]}"
    ]
    prometheus = services["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:v") and prometheus["image"].count(".") == 2
    assert [str(port.get("host_ip")) for port in prometheus["ports"]] == ["127.0.0.1"]


def test_plain_compose_up_starts_no_monitoring(compose_cli: str) -> None:
    result = run_compose_config(compose_cli, ("docker-compose.yml",), SENTIQ_REDIS_PASSWORD="test-password")
    assert result.returncode == 0, result.stderr
    assert not {"exporter", "prometheus"} & set(json.loads(result.stdout)["services"])

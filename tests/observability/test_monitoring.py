"""/api/system/monitoring/health and /targets (System Monitoring guide) against a real Prometheus server scraping a
real Vigil API (gunicorn), and against Prometheus servers that are not there."""

import socket
import time

import pytest
import requests

from tests.helpers import worker_env
from tests.obs_servers import PrometheusServer, prometheus_binary
from tests.servers import ApiServer, free_port


@pytest.fixture
def monitoring_client(settings):
    def make(url: str, timeout: float = 2.0):
        from app import create_app
        from app.core.settings import replace

        app = create_app(replace(settings, prometheus_url=url, prometheus_timeout=timeout))
        app.testing = True
        return app.test_client()

    return make


def _jobs(vigil_port: int, dead_ports: list[int]) -> list[dict]:
    jobs = [
        {
            "job_name": "vigil",
            "metrics_path": "/api/metrics",
            "static_configs": [{"targets": [f"127.0.0.1:{vigil_port}"]}],
        }
    ]
    if dead_ports:
        jobs.append(
            {"job_name": "redis-exporter", "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in dead_ports]}]}
        )
    return jobs


@pytest.mark.slow
def test_against_a_real_prometheus_scraping_vigil(monitoring_client, wait):
    binary = prometheus_binary()
    if binary is None:
        pytest.skip(
            "no prometheus binary: `make test` installs Debian's package (scripts/ensure-prometheus); "
            "this machine could not"
        )
    api = ApiServer(worker_env(), workers=2).start()
    prom = None
    try:
        dead = free_port()
        prom = PrometheusServer(binary, _jobs(api.port, [dead])).start()
        client = monitoring_client(prom.url)

        def both_scraped():
            body = client.get("/api/system/monitoring/targets").get_json()
            healths = {t["job"]: t["health"] for t in body.get("targets", [])}
            return body if healths == {"vigil": "up", "redis-exporter": "down"} else None

        body = wait(both_scraped, 60, interval=0.5, what="prometheus to scrape vigil and the dead target")
        assert (body["total"], body["up"], body["down"]) == (2, 1, 1)
        assert body["jobs"] == ["redis-exporter", "vigil"]
        vigil = next(t for t in body["targets"] if t["job"] == "vigil")
        assert vigil["instance"] == f"127.0.0.1:{api.port}" and vigil["labels"]["job"] == "vigil"
        assert vigil["last_error"] is None and vigil["last_scrape"].endswith("Z")
        assert vigil["scrape_duration_seconds"] > 0
        redis_target = next(t for t in body["targets"] if t["job"] == "redis-exporter")
        assert redis_target["last_error"]

        # Prometheus itself parsed Vigil's exposition: series with Vigil's names exist in its TSDB.
        def stored():
            r = requests.get(
                prom.url + "/api/v1/query", params={"query": 'count(http_requests_total{job="vigil"})'}, timeout=5
            ).json()
            return r["data"]["result"] if r["data"]["result"] else None

        assert float(wait(stored, 30, interval=0.5, what="vigil series in prometheus")[0]["value"][1]) >= 1

        health = client.get("/api/system/monitoring/health")
        assert health.status_code == 200
        h = health.get_json()
        # One up, one down: not a majority down, so healthy; the down target is an issue.
        assert h["healthy"] is True and h["prometheus_reachable"] is True and h["prometheus_url"] == prom.url
        assert {s["job"]: (s["total"], s["up"], s["down"]) for s in h["targets_summary"]} == {
            "vigil": (1, 1, 0),
            "redis-exporter": (1, 0, 1),
        }
        exporters = {e["name"]: e for e in h["exporters"]}
        assert exporters["redis-exporter"]["status"] == "down" and exporters["redis-exporter"]["error"]
        assert exporters["blackbox-exporter"]["status"] == "not_configured"
        mc = h["metrics_collection"]
        assert mc["collecting"] is True and mc["scrape_interval_seconds"] == 1 and mc["total_series"] > 0
        assert mc["last_successful_scrape"].endswith("Z")
        assert any("redis-exporter" in issue and "down" in issue for issue in h["issues"])

        # Two more dead targets: three of four down is a majority, so unhealthy.
        prom.reload(_jobs(api.port, [dead, free_port(), free_port()]))

        def majority_down():
            h = client.get("/api/system/monitoring/health").get_json()
            return h if sum(s["down"] for s in h["targets_summary"]) == 3 else None

        h = wait(majority_down, 60, interval=0.5, what="three dead targets")
        assert h["healthy"] is False and h["prometheus_reachable"] is True
        assert h["issues"][0] == "majority of targets down (3 of 4)"
        assert client.get("/api/system/monitoring/targets").status_code == 200
    finally:
        if prom is not None:
            prom.stop()
        api.stop()


def test_unreachable_prometheus(monitoring_client):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = monitoring_client(url)
    r = client.get("/api/system/monitoring/targets")
    assert r.status_code == 503
    assert "Prometheus unreachable" in r.get_json()["detail"] and r.get_json()["request_id"]
    r = client.get("/api/system/monitoring/health")
    assert r.status_code == 200
    h = r.get_json()
    assert h["healthy"] is False and h["prometheus_reachable"] is False and h["prometheus_url"] == url
    assert h["issues"] and h["issues"][0].startswith("Prometheus unreachable")
    assert {e["status"] for e in h["exporters"]} == {"unknown"}
    assert h["metrics_collection"]["collecting"] is False


def test_prometheus_that_never_answers_costs_at_most_the_timeout(monitoring_client):
    with socket.socket() as listener:  # accepts connections into its backlog, never replies
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        client = monitoring_client(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.5)
        started = time.perf_counter()
        assert client.get("/api/system/monitoring/targets").status_code == 503
        h = client.get("/api/system/monitoring/health").get_json()
        assert h["healthy"] is False and "timed out" in h["issues"][0].lower()
        assert time.perf_counter() - started < 5


def test_prometheus_not_configured(monitoring_client):
    client = monitoring_client("")
    assert client.get("/api/system/monitoring/targets").status_code == 503
    h = client.get("/api/system/monitoring/health").get_json()
    assert h["healthy"] is False and h["prometheus_url"] is None and "VIGIL_PROMETHEUS_URL is empty" in h["issues"][0]

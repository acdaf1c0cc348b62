"""/api/metrics: prometheus-client's own parser reads it, counters move when real workers run
jobs, and values merge across gunicorn's processes."""

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.celery.app import celery
from app.observability import metrics
from app.observability.metrics import sample_value


def _scrape(client) -> str:
    r = client.get("/api/metrics")
    assert r.status_code == 200
    assert r.content_type.startswith("text/plain") and "version=0.0.4" in r.content_type
    text = r.get_data(as_text=True)
    families = {f.name for f in text_string_to_metric_families(text)}  # raises on a malformed line
    assert {"http_requests", "vigil_queue_depth", "vigil_redis_up", "detection_latency_seconds"} <= families
    return text


def test_metrics_parse_and_label_requests_by_rule(client):
    assert client.get("/api/logs/987654321").status_code in (404, 503)
    client.get("/no/such/path")
    text = _scrape(client)
    assert sample_value(text, "http_requests_total", {"endpoint": "/api/logs/<log_id>", "method": "GET"}) >= 1
    assert sample_value(text, "http_requests_total", {"endpoint": "<unmatched>", "status": "404"}) >= 1
    assert 'endpoint="/api/logs/987654321"' not in text  # raw paths never become series
    assert sample_value(text, "http_request_duration_seconds_count", {"endpoint": "/api/logs/<log_id>"}) >= 1
    assert sample_value(text, "vigil_redis_up") == 1


def test_pipeline_stage_and_gpu_setters(client):
    before = _scrape(client)
    metrics.observe_stage("detection", 0.2)
    with metrics.time_stage("analysis"):
        pass
    metrics.set_gpu(
        0,
        utilization_percent=75.5,
        memory_used_bytes=2e9,
        memory_total_bytes=8e9,
        temperature_celsius=61,
        power_watts=140,
    )
    after = _scrape(client)
    assert (
        sample_value(after, "detection_latency_seconds_count")
        == sample_value(before, "detection_latency_seconds_count") + 1
    )
    assert sample_value(after, "vigil_pipeline_stage_duration_seconds_count", {"stage": "analysis"}) >= 1
    assert sample_value(after, "gpu_utilization_percent", {"gpu": "0"}) == 75.5
    assert sample_value(after, "gpu_available", {"gpu": "0"}) == 1
    metrics.gpu_gone(0)
    gone = _scrape(client)
    assert sample_value(gone, "gpu_available", {"gpu": "0"}) == 0
    assert sample_value(gone, "gpu_utilization_percent", {"gpu": "0"}) == 0


@pytest.mark.slow
def test_job_counters_and_durations_move_when_workers_run_jobs(celery_workers, client, wait):
    from app.jobs.registry import get_registry

    labels = {"queue": "analysis", "task": "vigil.system.canary"}
    before = _scrape(client)
    ids = []
    for kwargs in ({"sleep": 0.05}, {"sleep": 0.05}, {"fail": "deliberate"}):
        job_id = f"m-{uuid.uuid4().hex}"
        celery.send_task("vigil.system.canary", kwargs=kwargs, queue="analysis", task_id=job_id)
        ids.append(job_id)
    registry = get_registry()
    wait(
        lambda: all((registry.get(j) or {}).get("state") in ("completed", "failed") for j in ids),
        30,
        what="canary jobs",
    )

    def moved():
        text = _scrape(client)
        return (
            text
            if sample_value(text, "vigil_jobs_total", {**labels, "outcome": "failed"})
            > sample_value(before, "vigil_jobs_total", {**labels, "outcome": "failed"})
            else None
        )

    after = wait(moved, 10, what="failed counter to move")

    def delta(name, extra=None):
        return sample_value(after, name, {**labels, **(extra or {})}) - sample_value(
            before, name, {**labels, **(extra or {})}
        )

    assert delta("vigil_jobs_total", {"outcome": "succeeded"}) == 2
    assert delta("vigil_jobs_total", {"outcome": "failed"}) == 1
    assert delta("vigil_task_duration_seconds_count") == 3
    assert delta("vigil_task_duration_seconds_sum") >= 0.1
    assert delta("vigil_jobs_published_total") == 3  # published from this (test) process
    assert sample_value(after, "vigil_processes_alive", {"group": "analysis_worker"}) >= 1
    assert sample_value(after, "vigil_registry_jobs", {"queue": "analysis", "state": "failed"}) >= 1


def test_queue_depth_counts_priority_sub_lists(client):
    from app.core.redis_client import get_broker_redis
    from app.jobs.registry import get_registry

    queue = "notification:high"  # nobody consumes it in this test session
    before = sample_value(_scrape(client), "vigil_queue_depth", {"queue": queue})
    ids = [f"d-{uuid.uuid4().hex}" for _ in range(3)]
    for i, job_id in enumerate(ids):
        celery.send_task("vigil.system.canary", queue=queue, task_id=job_id, priority=9 if i == 0 else 0)
    broker = get_broker_redis()
    try:
        assert broker.llen(queue.encode() + b"\x06\x169") == 1  # kombu's sub-list for priority 9
        after = sample_value(_scrape(client), "vigil_queue_depth", {"queue": queue})
        assert after == before + 3
    finally:
        for key in [queue.encode()] + [queue.encode() + b"\x06\x16" + str(p).encode() for p in (3, 6, 9)]:
            for raw in broker.lrange(key, 0, -1):
                if any(j.encode() in raw for j in ids):
                    broker.lrem(key, 0, raw)
        for job_id in ids:
            get_registry().forget(job_id)


@pytest.mark.slow
def test_values_merge_across_gunicorn_processes_and_dead_workers_lose_live_gauges(tmp_path, wait):
    from tests.helpers import worker_env
    from tests.servers import ApiServer

    metrics_dir = tmp_path / "metrics"
    api = ApiServer(worker_env(VIGIL_METRICS_DIR=str(metrics_dir)), workers=2).start()
    try:
        pids = api.worker_pids()
        assert len(pids) == 2
        labels = {"endpoint": "/health", "method": "GET", "status": "200"}
        # The start-up's readiness polls (as many as the machine's load made) are counted already.
        before = sample_value(requests.get(api.url + "/api/metrics", timeout=10).text, "http_requests_total", labels)
        # A new connection each time, until both workers have served some: the kernel, not
        # gunicorn, picks which worker accepts, and it may favour one for a long run.
        n = 0

        def writers() -> set[int]:
            return {int(p.stem.rsplit("_", 1)[1]) for d in metrics_dir.iterdir() for p in d.glob("counter_*.db")}

        deadline = time.monotonic() + 30
        while n < 60 or (not set(pids) <= writers() and time.monotonic() < deadline):
            requests.get(api.url + "/health", headers={"Connection": "close"}, timeout=5)
            n += 1
        host_dir = next(metrics_dir.iterdir())
        assert set(pids) <= writers(), f"both gunicorn workers write their own files: {writers()} vs {pids}"

        text = requests.get(api.url + "/api/metrics", timeout=10).text
        served = sample_value(text, "http_requests_total", labels)
        assert served == before + n  # every request counted once, whichever worker served it

        victim = pids[0]
        live = host_dir / f"gauge_livesum_{victim}.db"
        assert live.exists()
        os.kill(victim, signal.SIGKILL)
        wait(lambda: not live.exists(), 30, what="child_exit to drop the dead worker's live gauges")
        assert (host_dir / f"counter_{victim}.db").exists()  # its counters still count
        text = requests.get(api.url + "/api/metrics", timeout=10).text
        assert sample_value(text, "http_requests_total", labels) >= served
    finally:
        api.stop()
    assert Path(metrics_dir).exists()

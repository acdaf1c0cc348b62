"""Real Celery workers: the registry follows a job through its life, heartbeats show the workers."""
import uuid

import pytest

from app.db import session_scope
from app.services.registry import get_registry, job_from_sql
from workers.celery_app import celery


def _send(queue: str, **kwargs) -> str:
    job_id = f"t-{uuid.uuid4().hex}"
    celery.send_task("vigil.system.canary", kwargs=kwargs, queue=queue, task_id=job_id)
    return job_id


def _states(registry, job_id, wait, final: set[str], timeout: float = 30) -> list[str]:
    """Poll a job until it reaches a final state; return the distinct states seen, in order."""
    seen: list[str] = []

    def step():
        job = registry.get(job_id)
        state = job["state"] if job else None
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        return state in final

    wait(step, timeout, interval=0.01, what=f"job {job_id} to finish")
    return seen


@pytest.mark.slow
def test_registry_follows_success_and_failure(celery_workers, wait):
    registry = get_registry()
    blocker = _send("analysis", sleep=1.5)          # concurrency 1: the next jobs must wait
    ok = _send("analysis", sleep=0.3, result={"n": 7})
    bad = _send("analysis", sleep=0.3, fail="deliberate failure")
    assert registry.get(ok)["state"] == "waiting"
    assert _states(registry, ok, wait, {"completed"}) == ["waiting", "active", "completed"]
    seen_bad = _states(registry, bad, wait, {"failed"})
    assert seen_bad[-2:] == ["active", "failed"] and seen_bad[0] == "waiting"
    job = registry.get(ok)
    assert job["result"] == {"n": 7} and job["attempts"] == 1
    assert job["worker"] == celery_workers["analysis_worker"].node and job["queue"] == "analysis"
    failed = registry.get(bad)
    assert "CanaryFailure: deliberate failure" in failed["error"]
    assert "Traceback (most recent call last)" in failed["traceback"] and "CanaryFailure" in failed["traceback"]
    _states(registry, blocker, wait, {"completed"})

    def archived():
        with session_scope() as s:
            return job_from_sql(s, bad)
    row = wait(archived, 10, what="failed job archived to SQL")
    assert row["state"] == "failed" and "CanaryFailure" in row["traceback"]


@pytest.mark.slow
def test_high_priority_queue_is_served_first(celery_workers, wait):
    registry = get_registry()
    blocker = _send("detection", sleep=1.0)
    wait(lambda: registry.get(blocker)["state"] == "active", 10)
    normal = [_send("detection", sleep=0) for _ in range(3)]
    high = _send("detection:high", sleep=0)
    for jid in normal + [high]:
        _states(registry, jid, wait, {"completed"})
    started = {jid: registry.get(jid)["started_at"] for jid in normal + [high]}
    assert started[high] < min(started[j] for j in normal)


@pytest.mark.slow
def test_heartbeats_and_readiness(celery_workers, client):
    from app.services import heartbeats
    from app.redis_client import get_redis
    from app.settings import get_settings

    beats = {b["node"]: b for b in heartbeats.alive(get_redis(), get_settings().heartbeat_ttl)}
    det = beats[celery_workers["detection_worker"].node]
    assert det["queues"] == ["detection:high", "detection"] and det["kind"] == "celery"
    r = client.get("/ready")
    assert r.status_code == 200, r.get_json()
    body = client.get("/api/system/health/ready").get_json()
    running = {w["name"]: w["running"] for w in body["workers"]}
    assert running["detection_worker"] and running["analysis_worker"]

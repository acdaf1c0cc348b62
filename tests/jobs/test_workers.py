"""Real Celery workers: the registry follows a job through its life, heartbeats show the workers."""

import uuid

import pytest

from app.celery.app import celery
from app.core.db import session_scope
from app.jobs.archive import job_from_sql
from app.jobs.registry import get_registry


def _send(queue: str, **kwargs) -> str:
    job_id = f"t-{uuid.uuid4().hex}"
    celery.send_task("vigil.system.canary", kwargs=kwargs, queue=queue, task_id=job_id)
    return job_id


def _states(registry, job_ids, wait, final: set[str], timeout: float = 30) -> dict[str, list[str]]:
    """Poll jobs together until each reaches a final state; the distinct states seen, in order."""
    if isinstance(job_ids, str):
        return _states(registry, [job_ids], wait, final, timeout)[job_ids]
    seen: dict[str, list[str]] = {j: [] for j in job_ids}

    def step():
        for job_id, states in seen.items():
            job = registry.get(job_id)
            state = job["state"] if job else None
            if state and (not states or states[-1] != state):
                states.append(state)
        return all(states and states[-1] in final for states in seen.values())

    wait(step, timeout, interval=0.01, what=f"jobs {job_ids} to finish")
    return seen


@pytest.mark.slow
def test_registry_follows_success_and_failure(celery_workers, wait):
    registry = get_registry()
    blocker = _send("analysis", sleep=1.5)  # concurrency 1: the next jobs must wait
    ok = _send("analysis", sleep=0.3, result={"n": 7})
    bad = _send("analysis", sleep=0.3, fail="deliberate failure")
    seen = _states(registry, [ok, bad], wait, {"completed", "failed"})
    assert seen[ok] == ["waiting", "active", "completed"]
    assert seen[bad] == ["waiting", "active", "failed"]
    job = registry.get(ok)
    assert job["result"] == {"n": 7} and job["attempts"] == 1
    assert job["worker"] == celery_workers["analysis_worker"].node and job["queue"] == "analysis"
    failed = registry.get(bad)
    assert "CanaryFailure: deliberate failure" in failed["error"]
    assert "Traceback (most recent call last)" in failed["traceback"] and "CanaryFailure" in failed["traceback"]
    _states(registry, blocker, wait, {"completed"})


def test_a_quick_job_is_dated_when_it_ran_not_when_it_was_written(celery_workers, wait):
    """A job under the start hold-back (100 ms) has its start and outcome written in one call;
    each keeps its own time, so started -> finished is the job's run time (a 50 ms sleep)."""
    from datetime import datetime

    registry = get_registry()
    job_id = _send("analysis", sleep=0.05)
    _states(registry, [job_id], wait, {"completed"})
    job = registry.get(job_id)
    started, finished = (datetime.fromisoformat(job[k].replace("Z", "+00:00")) for k in ("started_at", "finished_at"))
    assert 0.045 <= (finished - started).total_seconds() < 1.0


def test_failed_job_is_archived_to_sql(celery_workers, wait):
    registry = get_registry()
    bad = _send("analysis", sleep=0, fail="deliberate failure")
    _states(registry, [bad], wait, {"failed"})

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
    _states(registry, normal + [high], wait, {"completed"})
    started = {jid: registry.get(jid)["started_at"] for jid in normal + [high]}
    assert started[high] < min(started[j] for j in normal)


@pytest.mark.slow
def test_heartbeats_and_readiness(celery_workers, client):
    from app.core.redis_client import get_redis
    from app.core.settings import get_settings
    from app.jobs import heartbeats

    beats = {b["node"]: b for b in heartbeats.alive(get_redis(), get_settings().heartbeat_ttl)}
    det = beats[celery_workers["detection_worker"].node]
    assert det["queues"] == ["detection:high", "detection"] and det["kind"] == "celery"
    r = client.get("/ready")
    assert r.status_code == 200, r.get_json()
    body = client.get("/api/system/health/ready").get_json()
    running = {w["name"]: w["running"] for w in body["workers"]}
    assert running["detection_worker"] and running["analysis_worker"]

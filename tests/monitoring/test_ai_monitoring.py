"""The AI Monitoring API against a running Vigil: gunicorn, real detection, analysis, notification and
cleanup workers, the service host (supervisor, archiver, batch closer, the `ai_monitor` service), a real local
detector and an LLM-shaped server that returns `usage`, a real local webhook receiver and SMTP server.

One module-scoped stack; the tests run in order and each leaves the agents resumed and unscaled.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from email import message_from_string, policy
from email.message import EmailMessage

import pytest

from app.models import Job
from app.monitoring import costs, rollups
from tests.ai_servers import YOLO_ANSWER, ScriptedServer, completion
from tests.api.stack import live_stack
from tests.helpers import make_jwt
from tests.servers import ROOT, SmtpServer, wait_for

BASE = "/api/v1/monitoring"
SECRET = "monitoring-webhook-secret"
MODEL = "nemotron-mon"
ANSWER = json.dumps({"risk_score": 40, "risk_level": "medium", "summary": "a person", "reasoning": "seen"})


# ---- rollups on both databases (no stack) -------------------------------------------------------------------
def _job(job_id: str, queue: str, state: str, latency: float, finished: float, **result) -> dict:
    return {
        "id": job_id,
        "task": "vigil.analysis.analyze",
        "queue": queue,
        "state": state,
        "args": [],
        "kwargs": {},
        "attempts": 1,
        "worker": "w",
        "error": None if state == "completed" else "AnalyserUnavailable: LLM answered HTTP 503",
        "traceback": None,
        "result": result or None,
        "idempotency_key": None,
        "request_id": None,
        "created_at": rollups_iso(finished - latency - 1),
        "started_at": rollups_iso(finished - latency),
        "finished_at": rollups_iso(finished),
        "updated_at": rollups_iso(finished),
    }


def rollups_iso(ts: float) -> str:
    from app.core.time import iso_utc

    return iso_utc(ts)


def test_rollups_count_each_finished_job_once(session_factory):
    from app.jobs.archive import upsert_jobs

    now = time.time()
    jobs = [
        _job("a1", "analysis", "completed", 0.2, now, analyser=f"llm:{MODEL}", input_tokens=100, output_tokens=10),
        _job("a2", "analysis", "completed", 0.4, now, analyser="llm:other", input_tokens=50, output_tokens=5),
        _job("a3", "analysis", "failed", 1.0, now),
        _job("d1", "detection", "completed", 0.05, now),
        _job("n1", "notification", "completed", 0.05, now),
    ]
    for _ in range(2):  # the same batch flushed twice (a crash before the Redis trim) counts once
        with session_factory() as session:
            rollups.record_jobs(session, jobs)
            upsert_jobs(session, jobs)
            session.commit()
    with session_factory() as session:
        start, end = rollups.window(rollups.HOUR, 3600, now)
        rows = rollups.read(session, rollups.HOUR, start, end)
        assert session.query(Job).count() == 5
    by_agent = rollups.by_key(rows, "agent_id")
    assert set(by_agent) == {"agent_analyser", "agent_detector"}
    analyser = by_agent["agent_analyser"]
    assert (analyser.requests, analyser.successes, analyser.failures) == (3, 2, 1)
    assert analyser.errors["model_error"] == 1 and analyser.input_tokens == 150 and analyser.output_tokens == 15
    assert 150 <= analyser.percentile(50) <= 500 and analyser.latency_max_ms == pytest.approx(1000, abs=5)
    priced = costs.costs(
        type("S", (), {"model_prices": f"{MODEL}=1000:2000"})(),  # USD per million tokens
        rollups.by_key(rows, "model"),
    )
    assert priced["cost_by_model"][0]["model"] == "nemotron-mon" or priced["cost_by_model"][1]["model"] == MODEL
    mine = next(r for r in priced["cost_by_model"] if r["model"] == MODEL)
    assert mine["tokens"] == 110 and mine["cost"] == pytest.approx((100 * 1000 + 10 * 2000) / 1e6)
    assert priced["unpriced_models"] == ["other"] and priced["total_tokens"] == 165


# ---- the live stack -----------------------------------------------------------------------------------------
class Detector:
    """A YOLO-shaped detector whose answers take `delay` seconds."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.server = ScriptedServer(self.respond).start()

    def respond(self, req):
        if req.path == "/health":
            return 200, {"status": "ok"}, 0
        return 200, YOLO_ANSWER, self.delay


@pytest.fixture(scope="module")
def stack(pg, redis_databases, tmp_path_factory):
    detector = Detector()
    llm = ScriptedServer(
        lambda req: (
            (200, {"data": [{"id": MODEL}]}, 0) if req.path.endswith("/models") else (200, completion(ANSWER), 0)
        )
    ).start()
    receiver = ScriptedServer(lambda req: (200, {"ok": True}, 0)).start()
    smtp = SmtpServer().start()
    tmp = tmp_path_factory.mktemp("monitoring")
    cameras = tmp / "cameras"
    cameras.mkdir()
    env = dict(
        VIGIL_CAMERA_ROOT=str(cameras),
        VIGIL_DETECTOR_BACKEND="http",
        VIGIL_DETECTOR_URL=detector.server.url,
        VIGIL_ANALYSER_BACKEND="llm",
        VIGIL_LLM_URL=llm.url,
        VIGIL_LLM_MODEL=MODEL,
        VIGIL_MODEL_PRICES=f"{MODEL}=1000:2000",
        VIGIL_BATCH_IDLE_TIMEOUT_SECONDS="1",
        VIGIL_BATCH_CHECK_INTERVAL="0.3",
        VIGIL_MONITORING_INTERVAL="0.3",
        VIGIL_MONITORING_WINDOW="3",
        VIGIL_MONITORING_WEBHOOK_URLS=receiver.url + "/hook",
        VIGIL_MONITORING_WEBHOOK_SECRET=SECRET,
        VIGIL_MONITORING_DRAIN_SECONDS="5",
        VIGIL_SMTP_HOST="127.0.0.1",
        VIGIL_SMTP_PORT=str(smtp.port),
        VIGIL_SMTP_STARTTLS="false",
    )
    groups = ("detection_worker", "analysis_worker", "notification_worker", "cleanup_service")
    with live_stack(pg, redis_databases, tmp, groups, **env) as s:
        log_path = tmp / "host.log"
        with open(log_path, "wb") as log:
            host = subprocess.Popen(
                [sys.executable, "-m", "workers.host"],
                cwd=ROOT,
                env=s.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        s.detector, s.llm, s.receiver, s.cameras, s.host_log = detector, llm, receiver, cameras, log_path
        s.smtp = smtp
        try:
            wait_for(lambda: s.get("/api/system/supervisor").status_code == 200, 40, what="the supervisor")
            yield s
        finally:
            host.terminate()
            # the workers' warm shutdowns side by side, not one after another (live_stack's own stop is then a no-op)
            stoppers = [threading.Thread(target=w.stop) for w in s.workers.values()]
            for t in stoppers:
                t.start()
            try:
                host.wait(15)
            except subprocess.TimeoutExpired:
                host.kill()
            for t in stoppers:
                t.join()
            for server in (detector.server, llm, receiver):
                server.stop()
            smtp.stop()


def _detect(stack, photos, camera: str, n: int = 1) -> list[str]:
    folder = stack.cameras / camera
    folder.mkdir(exist_ok=True)
    ids = []
    for _ in range(n):
        path = folder / f"{uuid.uuid4().hex[:8]}.jpg"
        shutil.copyfile(photos["astronaut"], path)
        r = stack.send(
            "POST",
            "/api/v1/platform/system/jobs",
            json={"task": "detection", "payload": {"camera_id": camera, "path": str(path)}},
        )
        assert r.status_code == 202, r.text
        ids.append(r.json()["data"]["job_id"])
    return ids


def _job_state(stack, job_id: str) -> str | None:
    r = stack.get(f"/api/v1/platform/system/jobs/{job_id}")
    return r.json()["data"]["status"] if r.status_code == 200 else None


def _ts(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _agent(stack, agent_id: str) -> dict:
    r = stack.get(f"{BASE}/agents/{agent_id}")
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.slow
def test_tokens_and_cost_add_up_per_model(stack, photos):
    cams = [f"mon_{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for cam in cams:
        _detect(stack, photos, cam)

    def costed():
        body = stack.get(f"{BASE}/dashboard?period=1h").json()
        rows = {r["model"]: r for r in body["costs"]["cost_by_model"]}
        return body if rows.get(MODEL, {}).get("tokens") == 2 * (321 + 54) else None

    body = wait_for(costed, 60, interval=0.3, what="two analyses' tokens in the dashboard")
    row = next(r for r in body["costs"]["cost_by_model"] if r["model"] == MODEL)
    assert row["input_tokens"] == 642 and row["output_tokens"] == 108
    assert row["cost"] == pytest.approx((642 * 1000 + 108 * 2000) / 1e6)
    assert body["costs"]["estimated_cost_usd"] == pytest.approx(row["cost"])
    assert body["metrics"]["total_requests"] >= 4 and body["summary"]["total_agents"] == 2
    tokens = _agent(stack, "agent_analyser")["metrics_detailed"]["tokens"]
    assert tokens["input"] == 642 and tokens["by_model"][MODEL] == {"input": 642, "output": 108, "requests": 2}
    assert _agent(stack, "agent_detector")["metrics_detailed"]["tokens"]["input"] == 0


@pytest.mark.slow
def test_pause_stops_detection_and_resumes_by_itself(stack, photos):
    r = stack.send(
        "POST", f"{BASE}/agents/agent_detector/pause", json={"reason": "maintenance", "duration_minutes": 0.06}
    )
    assert r.status_code == 200, r.text
    pause = r.json()
    assert pause["current_status"] == "paused" and pause["active_requests_drained"] is True and pause["resume_at"]
    again = stack.send("POST", f"{BASE}/agents/agent_detector/pause", json={})
    assert again.status_code == 409 and again.json()["code"] == "agent_already_paused"
    agent = _agent(stack, "agent_detector")
    assert agent["status"] == "paused" and agent["pause"]["reason"] == "maintenance"
    queues = {q["name"]: q for q in stack.get("/api/v1/platform/system/queues").json()["data"]["queues"]}
    assert queues["detection"]["paused"] and queues["detection:high"]["paused"]

    job_id = _detect(stack, photos, f"mon_{uuid.uuid4().hex[:6]}")[0]
    time.sleep(1.0)  # the worker would have taken it by now
    assert _job_state(stack, job_id) == "waiting"
    # nobody calls resume: the service host's ai_monitor resumes the queues at resume_at
    wait_for(lambda: _agent(stack, "agent_detector")["status"] != "paused", 15, interval=0.2, what="resume_at")
    assert time.time() >= _ts(pause["resume_at"]) - 0.5
    wait_for(lambda: _job_state(stack, job_id) == "completed", 30, interval=0.2, what="the held job to run")


@pytest.mark.slow
def test_scale_changes_the_pool_as_its_heartbeat_reports(stack):
    r = stack.send("POST", f"{BASE}/agents/agent_detector/scale", json={"replicas": 2, "reason": "peak"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["previous_replicas"], body["current_replicas"], body["confirmed"]) == (1, 2, True)
    assert _agent(stack, "agent_detector")["configuration"]["max_concurrent"] == 2
    wait_for(lambda: len(stack.workers["detection_worker"].pool_pids()) == 2, 10, what="a second pool process")
    too_many = stack.send("POST", f"{BASE}/agents/agent_detector/scale", json={"replicas": 40})
    assert too_many.status_code == 400
    r = stack.send("POST", f"{BASE}/agents/agent_detector/scale", json={"replicas": 1})
    assert r.status_code == 200 and r.json()["current_replicas"] == 1, r.text


def _hooks(stack, event: str) -> list[dict]:
    out = []
    for req in list(stack.receiver.requests):
        body = req.json()
        if body.get("event") != event:
            continue
        sig = "sha256=" + hmac.new(SECRET.encode(), req.body, hashlib.sha256).hexdigest()
        headers = {k.lower(): v for k, v in req.headers.items()}
        assert hmac.compare_digest(headers["x-vigil-signature"], sig), "bad signature"
        assert headers["x-vigil-delivery"] == body["id"]
        out.append(body)
    return out


@pytest.mark.slow
def test_latency_rule_alerts_notifies_remediates_and_resolves(stack, photos):
    rule = {
        "name": "Slow detector",
        "agent_id": "agent_detector",
        "condition": {"metric": "p95_latency_ms", "operator": "gt", "threshold": 400, "duration_minutes": 0.02},
        "severity": "warning",
        "channels": ["webhook"],
        "auto_remediate": {"action": "restart", "max_attempts": 1},
    }
    r = stack.send("PUT", f"{BASE}/alerts/rules", json={"rules": [rule]})
    assert r.status_code == 200, r.text
    stack.detector.delay = 0.8
    cam = f"mon_{uuid.uuid4().hex[:6]}"
    for _ in range(3):
        _detect(stack, photos, cam)

    def active():
        alerts = stack.get(f"{BASE}/alerts?agent_id=agent_detector").json()["alerts"]
        return next((a for a in alerts if a["rule_name"] == "Slow detector" and a["status"] == "active"), None)

    alert = wait_for(active, 40, interval=0.2, what="the latency alert")
    assert alert["type"] == "high_latency" and alert["threshold"]["current"] > 400
    triggered = wait_for(lambda: _hooks(stack, "monitoring.alert_triggered"), 20, what="the signed webhook")
    assert triggered[0]["data"]["id"] == alert["id"]
    wait_for(lambda: _hooks(stack, "monitoring.agent_restarted"), 30, what="the auto-remediation restart")
    wait_for(
        lambda: any(
            e["action"] == "restart"
            for e in stack.get("/api/system/supervisor/restart-history?worker_name=detection_worker").json()["items"]
        ),
        15,
        what="the restart in the supervisor's history",
    )

    stack.detector.delay = 0.0
    resolved = wait_for(
        lambda: next(
            (a for a in stack.get(f"{BASE}/alerts?status=resolved").json()["alerts"] if a["id"] == alert["id"]), None
        ),
        40,
        interval=0.3,
        what="the alert to resolve",
    )
    assert resolved["remediation_attempts"] == 1 and resolved["resolved_by"] == "evaluator"
    assert resolved["occurrence_count"] >= 1
    wait_for(lambda: _hooks(stack, "monitoring.alert_resolved"), 20, what="the resolved webhook")
    assert stack.send("PUT", f"{BASE}/alerts/rules", json={"rules": []}).status_code == 200


@pytest.mark.slow
def test_every_operation_answers_with_its_documented_fields(stack):
    def keys(body: dict, *names: str) -> None:
        missing = [n for n in names if n not in body]
        assert not missing, (missing, body)

    dash = stack.get(f"{BASE}/dashboard?period=24h").json()
    keys(dash, "generated_at", "period", "summary", "metrics", "costs", "active_alerts", "top_issues")
    keys(dash["summary"], "total_agents", "healthy", "degraded", "offline", "health_score")
    keys(dash["metrics"], "total_requests", "successful_requests", "failed_requests", "success_rate")
    keys(dash["metrics"], "avg_latency_ms", "p95_latency_ms", "p99_latency_ms")
    keys(dash["costs"], "total_tokens", "input_tokens", "output_tokens", "estimated_cost_usd", "cost_by_model")

    listed = stack.get(f"{BASE}/agents").json()
    keys(listed, "agents", "total")
    assert {a["id"] for a in listed["agents"]} == {"agent_detector", "agent_analyser"}
    for a in listed["agents"]:
        keys(a, "id", "name", "type", "status", "version", "metrics", "last_heartbeat", "started_at")
        keys(a["metrics"], "uptime_percent", "requests_24h", "avg_latency_ms", "error_rate")
    assert stack.get(f"{BASE}/agents?type=risk_analyser").json()["total"] == 1

    detail = _agent(stack, "agent_analyser")
    keys(detail, "configuration", "health", "metrics_detailed", "recent_errors", "dependencies")
    keys(detail["configuration"], "model_primary", "model_fallback", "max_concurrent", "timeout_ms", "retry_count")
    assert detail["configuration"]["model_primary"] == MODEL
    assert {c["name"] for c in detail["health"]["checks"]} == {"model_connection", "memory_usage", "queue_depth"}
    for part, fields in (("requests", ("total", "successful", "failed", "by_hour")), ("latency", ("p50_ms", "p99_ms"))):
        keys(detail["metrics_detailed"][part], *fields)
    missing = stack.get(f"{BASE}/agents/agent_nope")
    assert missing.status_code == 404 and missing.json()["code"] == "agent_not_found"

    r = stack.send("POST", f"{BASE}/agents/agent_analyser/pause", json={"reason": "walk"})
    keys(r.json(), "agent_id", "previous_status", "current_status", "paused_at", "resume_at", "active_requests_drained")
    r = stack.send("POST", f"{BASE}/agents/agent_analyser/resume")
    assert r.status_code == 200 and r.json()["current_status"] != "paused", r.text
    r = stack.send("POST", f"{BASE}/agents/agent_analyser/restart", json={"reason": "walk", "force": False})
    assert r.status_code == 200, r.text
    keys(r.json(), "agent_id", "previous_status", "current_status", "restarted_at", "confirmed")

    r = stack.send(
        "PUT",
        f"{BASE}/alerts/rules",
        json={"rules": [{"name": "Bad", "condition": {"metric": "nonsense", "operator": "gt", "threshold": 1}}]},
    )
    assert r.status_code == 400 and r.json()["code"] == "invalid_metric" and r.json()["metric"] == "nonsense"
    always = {"name": "Always", "condition": {"metric": "heartbeat_age_seconds", "operator": "gte", "threshold": 0}}
    r = stack.send("PUT", f"{BASE}/alerts/rules", json={"rules": [dict(always, severity="info")]})
    assert r.status_code == 200 and r.json()["count"] == 1, r.text
    alerts = wait_for(
        lambda: stack.get(f"{BASE}/alerts?status=active&severity=info").json()["alerts"], 20, what="an alert"
    )
    page = stack.get(f"{BASE}/alerts").json()
    keys(page, "alerts", "summary")
    keys(page["summary"], "critical", "warning", "info")
    keys(alerts[0], "id", "agent_id", "type", "severity", "status", "title", "message", "threshold", "triggered_at")
    keys(alerts[0], "last_occurrence", "occurrence_count", "acknowledged_by")
    keys(alerts[0]["threshold"], "metric", "operator", "value", "current")
    stack.send("PUT", f"{BASE}/alerts/rules", json={"rules": []})
    r = stack.send("POST", f"{BASE}/alerts/{alerts[0]['id']}/acknowledge", json={"notes": "looking"})
    assert r.status_code == 200 and r.json()["status"] == "acknowledged", r.text
    assert r.json()["acknowledged_by"] and r.json()["acknowledged_at"]
    r = stack.send("POST", f"{BASE}/alerts/{alerts[0]['id']}/resolve", json={"resolution": "ok", "root_cause": "walk"})
    assert r.status_code in (200, 409), r.text  # the evaluator may have resolved it first (its rule is gone)
    gone = stack.send("POST", f"{BASE}/alerts/{uuid.uuid4()}/acknowledge", json={})
    assert gone.status_code == 404 and gone.json()["code"] == "alert_not_found"

    trace = uuid.uuid4().hex
    entry = {"level": "error", "agent_id": "agent_detector", "message": "camera feed lost", "trace_id": trace}
    r = stack.send("POST", f"{BASE}/logs", json={"logs": [dict(entry, context={"camera": "porch"})]})
    assert r.status_code == 202 and r.json()["accepted"] == 1, r.text
    logs = stack.get(f"{BASE}/logs?agent_id=agent_detector&level=error&search=feed+lost&limit=5").json()["logs"]
    assert logs and logs[0]["trace_id"] == trace and logs[0]["context"] == {"camera": "porch"}

    m = stack.get(f"{BASE}/metrics?period=7d&granularity=hour").json()
    keys(m, "period", "metrics")
    keys(m["period"], "start", "end")
    keys(m["metrics"]["requests"], "total", "by_agent", "timeseries")
    keys(m["metrics"]["latency"], "avg", "p50", "p95", "p99", "timeseries")
    keys(m["metrics"]["tokens"], "input", "output", "timeseries")
    keys(m["metrics"]["errors"], "total", "by_type")
    assert len(m["metrics"]["requests"]["timeseries"]) in (168, 169)
    bad = stack.get(f"{BASE}/metrics?metric=nonsense")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_metric"

    r = stack.send(
        "POST",
        f"{BASE}/metrics/export",
        json={
            "metrics": ["requests", "tokens"],
            "period": {"start": "2026-01-01", "end": "2030-01-01"},
            "format": "csv",
        },
    )
    assert r.status_code == 202, r.text
    keys(r.json(), "export_id", "status", "format", "download_url")
    status = wait_for(
        lambda: (lambda b: b if b["status"] == "completed" else None)(stack.get(r.json()["status_url"]).json()),
        20,
        what="the export",
    )
    csv = stack.get(status["download_url"])
    assert csv.status_code == 200 and csv.text.startswith("timestamp,agent_id,metric,value")

    h = stack.get(f"{BASE}/health").json()
    keys(h, "status", "timestamp", "components", "version")
    assert [c["name"] for c in h["components"]] == ["api", "model_providers", "cache"]

    changed = _hooks(stack, "monitoring.agent_status_changed")  # the pauses and resumes above, signed
    assert {h["data"]["current_status"] for h in changed} >= {"paused"} and len(changed) >= 4

    viewer = {"Authorization": f"Bearer {make_jwt(['viewer'])}"}
    denied = stack.session.post(f"{stack.url}{BASE}/agents/agent_detector/resume", headers=viewer, timeout=10)
    assert denied.status_code == 403 and denied.json()["code"] == "insufficient_permissions"
    admin = {"Authorization": f"Bearer {make_jwt(['ai_admin'])}"}
    allowed = stack.session.post(f"{stack.url}{BASE}/agents/agent_detector/resume", headers=admin, timeout=10)
    assert allowed.status_code == 200, allowed.text


# ---- the asynchronous metrics export, tenants, stopping, forced restarts, e-mail -----------------------------
EXPORT_BODY = {"metrics": ["requests", "latency"], "period": {"start": "2026-01-01", "end": "2030-01-01"}}


def _pause_queue(stack, queue: str, pause: bool) -> None:
    r = stack.send("POST", f"/api/v1/platform/system/queues/{queue}/{'pause' if pause else 'resume'}")
    assert r.status_code == 200, r.text


@pytest.mark.slow
def test_metrics_export_is_an_asynchronous_job(stack):
    _pause_queue(stack, "cleanup", True)  # hold the job, so its `processing` state is seen for sure
    try:
        r = stack.send("POST", f"{BASE}/metrics/export", json=dict(EXPORT_BODY, format="json"))
        assert r.status_code == 202, r.text
        queued = r.json()
        assert queued["status"] == "processing" and queued["download_url"] is None and queued["rows"] == 0
        assert queued["completed_at"] is None and queued["job_id"]
        early = stack.get(f"{BASE}/metrics/export/{queued['export_id']}/download")
        assert early.status_code == 409 and early.json()["code"] == "export_not_ready", early.text
        assert early.json()["status"] == "processing"
        job = stack.get(f"/api/v1/platform/system/jobs/{queued['job_id']}").json()["data"]
        assert job["task"] == "vigil.cleanup.export_metrics" and job["queue"] == "cleanup"
        assert job["status"] == "waiting"
    finally:
        _pause_queue(stack, "cleanup", False)

    def done(export_id: str) -> dict | None:
        body = stack.get(f"{BASE}/metrics/export/{export_id}").json()
        return body if body["status"] != "processing" else None

    status = wait_for(lambda: done(queued["export_id"]), 20, interval=0.2, what="the export job")
    assert status["status"] == "completed" and status["completed_at"] and status["expires_at"], status
    assert status["download_url"].endswith("/download") and status["error"] is None
    data = stack.get(status["download_url"])
    assert data.status_code == 200 and data.headers["Content-Type"].startswith("application/json")
    rows = data.json()
    assert len(rows) == status["rows"] > 0
    assert {r["metric"] for r in rows} >= {"requests", "avg_ms", "p95_ms"} and "input_tokens" not in {
        r["metric"] for r in rows
    }
    assert _job_state(stack, queued["job_id"]) == "completed"

    # a job that cannot write its file fails, says why, and has nothing to download
    folder = stack.settings().export_dir / "monitoring"
    _pause_queue(stack, "cleanup", True)
    try:
        failing = stack.send("POST", f"{BASE}/metrics/export", json=EXPORT_BODY).json()
        aside = folder.with_name("monitoring.aside")
        folder.rename(aside)
        folder.write_text("not a directory")
    finally:
        _pause_queue(stack, "cleanup", False)
    try:
        status = wait_for(lambda: done(failing["export_id"]), 20, interval=0.2, what="the failing export job")
    finally:
        folder.unlink()
        aside.rename(folder)
    assert status["status"] == "failed" and status["error"] and status["download_url"] is None, status
    gone = stack.get(f"{BASE}/metrics/export/{failing['export_id']}/download")
    assert gone.status_code == 409 and gone.json()["status"] == "failed"
    assert _job_state(stack, failing["job_id"]) == "failed"
    assert stack.get(f"{BASE}/metrics/export/{uuid.uuid4().hex}").status_code == 404


def test_purge_deletes_metrics_exports_past_their_retention(tmp_path):
    import os

    from app.core.settings import Settings
    from app.monitoring import exports

    settings = Settings.from_env({"VIGIL_EXPORT_DIR": str(tmp_path), "VIGIL_EXPORT_RETENTION_HOURS": "1"})
    folder = tmp_path / "monitoring"
    folder.mkdir()
    old, part, fresh = folder / "a.csv", folder / "b.json.part", folder / "c.csv"
    for path in (old, part, fresh):
        path.write_text("x")
    for path in (old, part):
        os.utime(path, (time.time() - 3700, time.time() - 3700))
    assert exports.purge_expired(settings) == 2
    assert sorted(p.name for p in folder.iterdir()) == ["c.csv"]


@pytest.mark.slow
def test_tenant_id_filters_for_this_installations_tenant(stack):
    mine = stack.get(f"{BASE}/agents?tenant_id=DEFAULT").json()
    assert mine["total"] == 2 == len(mine["agents"])
    other = str(uuid.uuid4())
    assert stack.get(f"{BASE}/agents?tenant_id={other}").json() == {"agents": [], "total": 0}
    dash = stack.get(f"{BASE}/dashboard?tenant_id={other}&period=24h").json()
    assert dash["summary"] == {
        "total_agents": 0,
        "healthy": 0,
        "degraded": 0,
        "offline": 0,
        "paused": 0,
        "health_score": 0,
    }
    assert dash["metrics"]["total_requests"] == 0 and dash["costs"]["cost_by_model"] == []
    assert dash["costs"]["total_tokens"] == 0 and dash["active_alerts"] == 0 and dash["top_issues"] == []
    ours = stack.get(f"{BASE}/dashboard?tenant_id=default&period=24h").json()
    assert (
        ours["summary"]["total_agents"] == 2
        and ours["costs"]["cost_by_model"]
        == (stack.get(f"{BASE}/dashboard?period=24h").json()["costs"]["cost_by_model"])
    )
    assert stack.get(f"{BASE}/agents?tenant_id=a%20b").status_code == 400


def _running(stack, job_id: str) -> bool:
    """Whether the detection pool's live heartbeat shows the job running (what a forced restart terminates)."""
    from app.monitoring import agents

    live = agents.live_state(stack.settings())
    return job_id in {j for b in live.pool(agents.AGENTS["agent_detector"]) for j in b.get("active_ids") or []}


@pytest.mark.slow
def test_stopping_is_reported_while_a_stopped_pool_finishes_its_job(stack, photos):
    stack.detector.delay = 4.0
    try:
        job_id = _detect(stack, photos, f"mon_{uuid.uuid4().hex[:6]}")[0]
        wait_for(lambda: _running(stack, job_id), 20, interval=0.1, what="the slow detection to run")
        r = stack.send("POST", "/api/system/supervisor/workers/detection_worker/stop")
        assert r.status_code in (200, 202), r.text
        agent = _agent(stack, "agent_detector")
        assert agent["status"] == "stopping", agent
        assert agent["issues"][0]["type"] == "stopping"
        assert any(a["status"] == "stopping" for a in stack.get(f"{BASE}/agents?status=stopping").json()["agents"])
        # the stopped pool finishes the job it had, then reports offline
        wait_for(lambda: _job_state(stack, job_id) == "completed", 15, interval=0.2, what="the running job")
        wait_for(lambda: _agent(stack, "agent_detector")["status"] == "offline", 10, interval=0.2, what="offline")
    finally:
        stack.detector.delay = 0.0
        r = stack.send("POST", "/api/system/supervisor/workers/detection_worker/start")
    assert r.status_code in (200, 202), r.text
    wait_for(lambda: _agent(stack, "agent_detector")["status"] == "healthy", 20, interval=0.2, what="running again")


@pytest.mark.slow
def test_forced_restart_does_not_wait_for_running_jobs(stack, photos):
    stack.detector.delay = 8.0
    try:
        job_id = _detect(stack, photos, f"mon_{uuid.uuid4().hex[:6]}")[0]
        wait_for(lambda: _running(stack, job_id), 20, interval=0.1, what="the slow detection to run")
        busy = set(stack.workers["detection_worker"].pool_pids())
        t0 = time.time()
        r = stack.send("POST", f"{BASE}/agents/agent_detector/restart", json={"reason": "stuck", "force": True})
        took = time.time() - t0
    finally:
        stack.detector.delay = 0.0
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["force"] is True and body["terminated_requests"] == 1 and body["confirmed"] is True, body
    assert took < 6.0, f"the forced restart took {took:.1f}s: it waited for the 8 s job"
    # the busy process was replaced at once, its job ended (terminated), not completed
    assert not busy & set(stack.workers["detection_worker"].pool_pids())
    wait_for(lambda: _job_state(stack, job_id) == "revoked", 10, interval=0.2, what="the terminated job")

    def restarts():
        items = stack.get("/api/system/supervisor/restart-history?worker_name=detection_worker").json()["items"]
        return [e for e in items if e["action"] == "restart" and _ts(e["timestamp"]) >= t0 - 1]

    wait_for(restarts, 15, what="the forced restart in the supervisor's history")
    # healthy, or degraded by the terminated job's failure in the error rate: running either way
    wait_for(
        lambda: _agent(stack, "agent_detector")["status"] in ("healthy", "degraded"), 20, interval=0.2, what="running"
    )


@pytest.mark.slow
def test_an_email_rule_is_delivered_through_smtp(stack, photos):
    rule = {
        "name": "Detector backlog",
        "agent_id": "agent_detector",
        "condition": {"metric": "queue_depth", "operator": "gte", "threshold": 1},
        "severity": "critical",
        "channels": ["email"],
        "recipients": ["ops@example.com"],
    }
    r = stack.send("PUT", f"{BASE}/alerts/rules", json={"rules": [rule]})
    assert r.status_code == 200 and r.json()["warnings"] == [], r.text
    assert stack.send("POST", f"{BASE}/agents/agent_detector/pause", json={"reason": "backlog"}).status_code == 200
    resumed = False
    try:
        _detect(stack, photos, f"mon_{uuid.uuid4().hex[:6]}")

        def mails(prefix: str) -> list[EmailMessage]:
            parsed = [
                message_from_string(m["data"], policy=policy.default)
                for m in list(stack.smtp.mailbox.messages)
                if m["to"] == ["ops@example.com"]
            ]
            return [m for m in parsed if m["Subject"].startswith(prefix)]

        raised = wait_for(lambda: mails("[Vigil critical] Queue Backlog"), 30, interval=0.2, what="the alert e-mail")
        alert = next(
            a for a in stack.get(f"{BASE}/alerts?status=active").json()["alerts"] if a["rule_name"] == rule["name"]
        )
        assert raised[0]["Subject"] == "[Vigil critical] Queue Backlog: Detector backlog"
        text = raised[0].get_content().replace("\r\n", "\n")  # as it came over SMTP
        assert re.match(r"queue_depth \(\d+\) gte threshold \(1\) on agent_detector\n\n", text), text
        assert f"Alert: {alert['id']}\n" in text and "Status: active\n" in text
        assert stack.send("POST", f"{BASE}/agents/agent_detector/resume").status_code == 200
        resumed = True
        resolved = wait_for(
            lambda: mails("[Vigil critical] Resolved: Queue Backlog"), 30, interval=0.2, what="the resolved e-mail"
        )
        text = resolved[0].get_content().replace("\r\n", "\n")
        assert resolved[0]["Subject"] == "[Vigil critical] Resolved: Queue Backlog: Detector backlog"
        assert f"Alert: {alert['id']}\n" in text and "Status: resolved\n" in text
        assert len(mails("[Vigil critical] Queue Backlog")) == 1  # one mail per alert raised, not one per event
    finally:
        if not resumed:
            stack.send("POST", f"{BASE}/agents/agent_detector/resume")
        stack.send("PUT", f"{BASE}/alerts/rules", json={"rules": []})

"""The supervisor with in-process services: a real service host (threads, real Redis, real SQL)
and the real API reading what it publishes."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import threading
import time

import pytest
import redis
from sqlalchemy import select

from app import create_app
from app.api.supervisor import NAME_PATTERN
from app.core.db import session_scope
from app.core.settings import replace
from app.jobs import heartbeats
from app.live import bus
from app.models import AuditLog
from app.ops.supervisor import COMMANDS_KEY, STATE_KEY
from tests.helpers import API_KEY
from workers.host.service import PeriodicService, Service
from workers.host.services.watcher import FileWatcher
from workers.host.supervisor import ServiceHost

HEADERS = {"X-API-Key": API_KEY}


class Sleeper(Service):
    """Runs until stopped; counts its runs."""

    def __init__(self, name: str = "sleeper", category: str = "infrastructure"):
        self.name, self.category = name, category
        self.runs = 0
        self.threads: list[threading.Thread] = []

    def run(self, stop: threading.Event) -> None:
        self.runs += 1
        self.threads.append(threading.current_thread())
        while not stop.wait(0.02):
            pass


class Crashy(Service):
    """Raises as soon as it starts while `crash` is set; behaves after."""

    name = "crashy"

    def __init__(self):
        self.crash = True

    def run(self, stop: threading.Event) -> None:
        if self.crash:
            raise RuntimeError("boom")
        while not stop.wait(0.02):
            pass


class Flaky(PeriodicService):
    """Ticks every 20 ms; its first `fail` ticks raise, as when the database is away."""

    name = "flaky"
    failure_warning = "flaky tick failed; will retry"

    def __init__(self, fail: int):
        super().__init__(0.02)
        self.fail, self.ticks, self.finished = fail, 0, 0

    def tick(self) -> None:
        self.ticks += 1
        if self.ticks <= self.fail:
            raise ConnectionError("database away")

    def finish(self) -> None:
        self.finished += 1


def kill_thread(thread: threading.Thread) -> None:
    """The closest Python has to SIGKILL for one thread: raise SystemExit inside it, wherever it is."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(SystemExit))
    assert done == 1


def worker(api, name: str) -> dict:
    body = api.get("/api/system/supervisor").get_json()
    return next(w for w in body["workers"] if w["name"] == name)


def history(api, name: str) -> list[dict]:
    body = api.get(f"/api/system/supervisor/restart-history?worker_name={name}&limit=100").get_json()
    return list(reversed(body["items"]))  # oldest first


def test_killed_service_thread_is_restarted_after_backoff(host, api, ops_settings, ops_client, wait):
    h = host([FileWatcher(ops_settings)])
    first = worker(api, "file_watcher")
    assert first["status"] == "running" and first["restart_count"] == 0 and first["max_restarts"] == 5
    assert ops_client.exists(f"vigil:hb:{heartbeats.node_name('file_watcher')}")

    killed_at = time.time()
    kill_thread(h.runners["file_watcher"].thread)
    crashed = wait(lambda: (w := worker(api, "file_watcher"))["status"] == "crashed" and w, 5, what="crash seen")
    assert "SystemExit" in crashed["error"] and crashed["last_crashed_at"]
    assert not ops_client.exists(f"vigil:hb:{heartbeats.node_name('file_watcher')}")  # withdrawn at once
    back = wait(lambda: (w := worker(api, "file_watcher"))["status"] == "running" and w, 10, what="restart")
    assert back["restart_count"] == 1
    events = wait(lambda: len(e := history(api, "file_watcher")) >= 2 and e, 5, what="history")
    assert [(e["status"], e["attempt"]) for e in events] == [("crashed", 0), ("success", 1)]
    assert "SystemExit" in events[0]["error"]
    # the crash is dated by the time its backoff counts from, so a restart never reads as early
    assert events[0]["timestamp"] == crashed["last_crashed_at"], (events[0], crashed)
    gap = _ts(events[1]) - _ts(events[0])
    assert 1.0 <= gap < 3.0, f"restart {gap:.2f}s after the crash; the first backoff is 1s"
    assert time.time() - killed_at >= 1.0
    wait(lambda: ops_client.exists(f"vigil:hb:{heartbeats.node_name('file_watcher')}"), 5, what="heartbeat back")


def _ts(event: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_crash_loop_backs_off_then_fails_until_reset(host, api, wait):
    crashy = Crashy()
    host([crashy])  # the documented backoff: 1, 2, 4, 8, 16 s
    failed = wait(
        lambda: (w := worker(api, "crashy"))["status"] == "failed" and w,
        60,
        interval=0.2,
        what="failed after five restarts",
    )
    assert failed["restart_count"] == 5 and "boom" in failed["error"]
    events = history(api, "crashy")
    assert [(e["status"], e["attempt"]) for e in events] == [
        ("crashed", 0),
        ("success", 1),
        ("crashed", 1),
        ("success", 2),
        ("crashed", 2),
        ("success", 3),
        ("crashed", 3),
        ("success", 4),
        ("crashed", 4),
        ("success", 5),
        ("crashed", 5),
        ("failed", 5),
    ]
    crashes = [e for e in events if e["status"] == "crashed"]
    restarts = [e for e in events if e["status"] == "success"]
    for delay, crash, restart in zip((1, 2, 4, 8, 16), crashes, restarts):
        gap = _ts(restart) - _ts(crash)
        assert delay <= gap < delay + 2.0, f"restart {gap:.2f}s after a crash; expected the {delay}s backoff"
    time.sleep(2)
    assert worker(api, "crashy")["status"] == "failed"  # stays failed: nothing restarts it

    crashy.crash = False
    r = api.post("/api/system/supervisor/reset/crashy", headers=HEADERS)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["success"] is True and "reset" in r.get_json()["message"]
    running = wait(lambda: (w := worker(api, "crashy"))["status"] == "running" and w, 5, what="running after reset")
    assert running["restart_count"] == 0
    assert history(api, "crashy")[-2:][0]["status"] == "manual"


def test_stop_start_restart_through_the_api(host, api, ops_client, ops_settings, wait):
    sleeper = Sleeper()
    host([sleeper])
    node = f"vigil:hb:{heartbeats.node_name('sleeper')}"
    wait(lambda: ops_client.exists(node), 5, what="service heartbeat")

    r = api.post("/api/system/supervisor/workers/sleeper/stop", headers=HEADERS)
    assert r.status_code == 200, r.get_json()
    assert r.get_json() == {
        **r.get_json(),
        "success": True,
        "worker_name": "sleeper",
        "message": "Worker 'sleeper' stopped successfully",
    }
    assert worker(api, "sleeper")["status"] == "stopped"
    assert not ops_client.exists(node)
    r = api.post("/api/system/supervisor/workers/sleeper/stop", headers=HEADERS)
    assert r.status_code == 400 and "already stopped" in r.get_json()["detail"]

    r = api.post("/api/system/supervisor/workers/sleeper/start", headers=HEADERS)
    assert r.status_code == 200 and worker(api, "sleeper")["status"] == "running"
    assert api.post("/api/system/supervisor/workers/sleeper/start", headers=HEADERS).status_code == 400

    r = api.post("/api/system/supervisor/workers/sleeper/restart", headers=HEADERS)
    assert r.status_code == 200, r.get_json()
    assert sleeper.runs == 3 and len({id(t) for t in sleeper.threads}) == 3
    assert worker(api, "sleeper")["restart_count"] == 0  # operator actions are not crashes
    assert [(e["status"], e["action"]) for e in history(api, "sleeper")] == [
        ("manual", "stop"),
        ("manual", "start"),
        ("manual", "restart"),
    ]
    # The same transitions on the live stream, each naming the status before it and the worker's process
    # (a service thread: the host's, this test's).
    assert bus.publisher(ops_settings).flush()
    changes = [
        json.loads(fields["m"])["payload"]
        for _, fields in ops_client.xrange(bus.STREAM)
        if json.loads(fields["m"])["type"] == "worker.status_changed"
    ]
    mine = [c for c in changes if c["worker"] == "sleeper"]
    assert [c["message"] for c in mine][-3:] == ["stop", "start", "restart"]
    assert all(c["pid"] == os.getpid() for c in mine)
    assert [c["previous"] for c in mine[1:]] == [c["status"] for c in mine[:-1]]
    with session_scope(ops_settings) as session:  # every command the API handed over is audited, refusals not
        rows = session.execute(select(AuditLog).where(AuditLog.resource_id == "sleeper").order_by(AuditLog.id))
        assert [(a.action, a.actor, a.details["confirmed"]) for a in rows.scalars()] == [
            ("worker_stop", "api_key:api-key", True),
            ("worker_start", "api_key:api-key", True),
            ("worker_restart", "api_key:api-key", True),
        ]
    # the supervisor endpoint and its alias
    for path in ("/api/system/supervisor", "/api/system/supervisor/status"):
        body = api.get(path).get_json()
        assert body["running"] is True and body["worker_count"] == len(body["workers"])
        names = [w["name"] for w in body["workers"]]
        assert names[0] == "sleeper" and {
            "detection_worker",
            "analysis_worker",
            "notification_worker",
            "cleanup_service",
            "beat",
        } <= set(names)


def test_a_failing_periodic_tick_is_recorded_and_logged_not_a_crash(host, api, caplog, wait):
    flaky = Flaky(fail=10)
    with caplog.at_level(logging.WARNING):
        host([flaky])
        wait(lambda: flaky.failures >= 3, 5, what="failing ticks")
        assert flaky.last_error == "ConnectionError: database away"
        wait(lambda: flaky.ticks > 10 and flaky.failures == 0, 5, what="a tick that succeeds")
    assert flaky.last_error is None
    warnings = [r for r in caplog.records if r.getMessage() == "flaky tick failed; will retry"]
    assert len(warnings) == 1 and warnings[0].exc_info, "ten failures in a row, one warning a minute"
    assert worker(api, "flaky")["status"] == "running" and worker(api, "flaky")["restart_count"] == 0
    assert api.post("/api/system/supervisor/workers/flaky/stop", headers=HEADERS).status_code == 200
    assert flaky.finished == 1


def test_names_are_validated_and_unknown_workers_are_404(host, api):
    host([Sleeper()])
    for bad in ("1abc", "bad-name", "_x", "a" * 65, "abc%0A"):
        for path in (f"/api/system/supervisor/workers/{bad}/start", f"/api/system/supervisor/reset/{bad}"):
            r = api.post(path, headers=HEADERS)
            assert r.status_code == 400, (path, r.get_json())
            assert NAME_PATTERN in r.get_json()["detail"]
    r = api.get("/api/system/supervisor/restart-history?worker_name=", headers=HEADERS)
    assert r.status_code == 400 and NAME_PATTERN in r.get_json()["detail"]
    r = api.post("/api/system/supervisor/workers/nosuch/start", headers=HEADERS)
    assert r.status_code == 404 and "nosuch" in r.get_json()["detail"]
    assert api.post("/api/system/supervisor/workers/sleeper/stop").status_code == 401
    r = api.post("/api/system/supervisor/workers/beat/restart", headers=HEADERS)
    assert r.status_code == 400 and "process manager" in r.get_json()["detail"]
    for query in ("worker_name=bad-name", "limit=0", "limit=101", "offset=-1", "limit=x"):
        r = api.get(f"/api/system/supervisor/restart-history?{query}")
        assert r.status_code == 400, query


def test_supervisor_down_is_503(api, ops_settings, ops_client, wait):
    assert api.get("/api/system/supervisor").status_code == 503
    r = api.post("/api/system/supervisor/workers/file_watcher/start", headers=HEADERS)
    assert r.status_code == 503 and r.get_json()["running"] is False
    assert api.post("/api/system/supervisor/reset/file_watcher", headers=HEADERS).status_code == 503
    assert api.get("/api/system/supervisor/restart-history").status_code == 200  # history is SQL: still there

    # A supervisor that beats but does not take commands: the API waits a bounded time, takes its
    # command back, and says nothing was done.
    heartbeats.publish(ops_client, "supervisor@stuck", {"kind": "supervisor"}, 30)
    ops_client.hset(STATE_KEY, "file_watcher", '{"name": "file_watcher", "status": "running", "kind": "service"}')
    slow = create_app(replace(ops_settings, supervisor_command_timeout=1.0)).test_client()
    t0 = time.monotonic()
    r = slow.post("/api/system/supervisor/workers/file_watcher/stop", headers=HEADERS)
    assert r.status_code == 503 and "did not take" in r.get_json()["detail"]
    assert 0.9 <= time.monotonic() - t0 < 3
    assert ops_client.llen(COMMANDS_KEY) == 0


def test_stopped_host_reads_as_down(host, api, ops_settings, wait):
    h = host([Sleeper()])
    assert api.get("/api/system/supervisor").status_code == 200
    h.stop()
    wait(
        lambda: api.get("/api/system/supervisor").status_code == 503,
        ops_settings.heartbeat_ttl + 2,
        what="503 once the supervisor heartbeat is gone",
    )


def test_disabled_service_is_not_restarted_automatically(host, api, wait):
    h = host([Sleeper("enricher", "ai")])
    r = api.post("/api/system/services/enricher/disable", headers=HEADERS)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["service_info"]["enabled"] is False and r.get_json()["action"] == "disable"
    kill_thread(h.runners["enricher"].thread)
    wait(lambda: worker(api, "enricher")["status"] == "crashed", 5, what="crash")
    time.sleep(2.0)  # longer than the first backoff
    assert worker(api, "enricher")["status"] == "crashed" and worker(api, "enricher")["next_restart_at"] is None
    for action in ("start", "restart"):
        r = api.post(f"/api/system/services/enricher/{action}", headers=HEADERS)
        assert r.status_code == 400 and "disabled" in r.get_json()["detail"]
    assert api.post("/api/system/services/enricher/enable", headers=HEADERS).status_code == 200
    wait(lambda: worker(api, "enricher")["status"] == "running", 5, what="self-healing resumed")
    r = api.post("/api/system/services/enricher/start", headers=HEADERS)
    assert r.status_code == 400 and "already running" in r.get_json()["detail"]


def test_services_list_and_external_services(host, api):
    host([Sleeper("enricher", "ai"), Sleeper("gpu_probe", "monitoring")])
    body = api.get("/api/system/services").get_json()
    by_name = {s["name"]: s for s in body["services"]}
    assert by_name["database"]["status"] == "running" and by_name["database"]["managed_by"] == "external"
    assert by_name["redis"]["status"] == "running" and by_name["enricher"]["category"] == "ai"
    assert by_name["detection_worker"]["category"] == "ai" and by_name["gpu_probe"]["category"] == "monitoring"
    assert body["supervisor_running"] is True
    total = sum(s["total"] for s in body["summaries"].values())
    assert total == len(body["services"])
    ai = api.get("/api/system/services?category=ai").get_json()
    assert {s["category"] for s in ai["services"]} == {"ai"} and set(ai["summaries"]) == {"ai"}
    assert api.get("/api/system/services?category=gpu").status_code == 400
    for name in ("database", "redis", "api"):
        r = api.post(f"/api/system/services/{name}/restart", headers=HEADERS)
        assert (
            r.status_code == 400
            and "not run by Vigil" in r.get_json()["detail"]
            or "gunicorn" in r.get_json()["detail"]
        )
    assert api.post("/api/system/services/nosuch/restart", headers=HEADERS).status_code == 404
    r = api.post("/api/system/services/enricher/restart", headers=HEADERS)
    assert r.status_code == 200 and r.get_json()["service_info"]["status"] == "running"


def test_restart_history_pages(db_url, api, ops_settings):
    from app.core.db import session_scope
    from app.ops.supervisor import record_events

    now = time.time()
    events = [
        {
            "worker_name": "detection_worker" if i % 2 else "file_watcher",
            "timestamp": now - 100 + i,
            "attempt": i,
            "status": "crashed",
            "error": f"e{i}",
        }
        for i in range(7)
    ]
    with session_scope(ops_settings) as session:
        record_events(session, events)
    body = api.get("/api/system/supervisor/restart-history?limit=3").get_json()
    assert body["pagination"] == {"total": 7, "limit": 3, "offset": 0, "items_count": 3, "has_more": True}
    assert [e["attempt"] for e in body["items"]] == [6, 5, 4]
    last = api.get("/api/system/supervisor/restart-history?limit=3&offset=6").get_json()
    assert last["pagination"]["has_more"] is False and [e["attempt"] for e in last["items"]] == [0]
    det = api.get("/api/system/supervisor/restart-history?worker_name=detection_worker").get_json()
    assert det["pagination"]["total"] == 3 and {e["worker_name"] for e in det["items"]} == {"detection_worker"}
    assert det["items"][0]["timestamp"].endswith("Z")


@pytest.mark.slow
def test_the_service_host_process(api, ops_settings, tmp_path, wait):
    """`python -m workers.host` as the Procfile runs it: every service up under the supervisor; a
    SIGKILLed host reads as a supervisor that is down."""
    import signal
    import subprocess
    import sys

    from tests.helpers import worker_env
    from tests.servers import ROOT

    env = worker_env(
        REDIS_URL=ops_settings.redis_url,
        DATABASE_URL=ops_settings.database_url,
        VIGIL_CAMERA_ROOT=str(tmp_path / "cams"),
        VIGIL_PERFORMANCE_INTERVAL="0.5",
    )
    log = open(tmp_path / "host.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.host"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def up():
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "host.log").read_text()[-3000:])
            r = api.get("/api/system/supervisor")
            return r.status_code == 200 and r.get_json()

        body = wait(up, 30, interval=0.2, what="supervisor up")
        services = {w["name"]: w for w in body["workers"] if w["kind"] == "service"}
        assert set(services) >= {"file_watcher", "gpu_monitor", "performance_monitor"}
        assert {w["status"] for w in services.values()} == {"running"}
        wait(
            lambda: api.get("/api/system/performance/history").get_json()["count"] >= 1,
            10,
            what="a stored performance snapshot",
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    wait(
        lambda: api.get("/api/system/supervisor").status_code == 503,
        ops_settings.heartbeat_ttl + 3,
        what="503 after the host was killed",
    )


def test_beat_is_watched_through_its_heartbeat(host, api, ops_settings, ops_client, wait):
    host([])
    assert worker(api, "beat")["status"] == "stopped" and worker(api, "beat")["controllable"] is False
    beat = heartbeats.HeartbeatThread(
        ops_client, heartbeats.node_name("beat"), 0.5, ops_settings.heartbeat_ttl, lambda: {"kind": "beat"}
    ).start()
    wait(lambda: worker(api, "beat")["status"] == "running", 5, what="beat running")
    beat._stop.set()  # dies without withdrawing its heartbeat, like a SIGKILLed beat
    beat._thread.join(2)
    crashed = wait(
        lambda: (w := worker(api, "beat"))["status"] == "crashed" and w,
        ops_settings.heartbeat_ttl + 3,
        what="beat crash seen",
    )
    assert "no heartbeat" in crashed["error"]
    again = heartbeats.HeartbeatThread(
        ops_client, heartbeats.node_name("beat"), 0.5, ops_settings.heartbeat_ttl, lambda: {"kind": "beat"}
    )
    again.started_at = time.time() + 1  # a new process
    again.start()
    try:
        back = wait(lambda: (w := worker(api, "beat"))["status"] == "running" and w, 5, what="beat back")
        assert back["restart_count"] == 1
        assert [(e["status"], e["attempt"]) for e in history(api, "beat")] == [("crashed", 0), ("success", 1)]
    finally:
        again.stop()
    wait(lambda: worker(api, "beat")["status"] == "stopped", 5, what="clean stop reads as stopped")
    assert api.post("/api/system/supervisor/reset/beat", headers=HEADERS).status_code == 400


def test_services_are_supervised_while_redis_is_down(settings, tmp_path, wait):
    """Restarting a crashed thread needs neither Redis nor the database; only publishing does."""
    from tests.servers import RedisServer

    own = RedisServer().start()
    try:
        s = replace(
            settings,
            redis_url=own.url,
            broker_url=own.url,
            result_backend=own.url,
            database_url=f"sqlite:///{tmp_path}/down.db",
            supervisor_backoff="0.2,0.2,0.2,0.2,0.2",
        )
        sleeper = Sleeper()
        h = ServiceHost([sleeper], s)
        h.start()
        try:
            wait(lambda: h.workers["sleeper"].status == "running", 5)
            own.stop(hard=True)
            kill_thread(h.runners["sleeper"].thread)
            wait(
                lambda: sleeper.runs == 2 and h.workers["sleeper"].status == "running",
                15,
                what="restart with Redis down",
            )
            assert h.workers["sleeper"].restart_count == 1
            own.start()  # same port and data: publication resumes
            client = redis.Redis.from_url(own.url, decode_responses=True)
            wait(
                lambda: client.hget(STATE_KEY, "sleeper") and '"restart_count": 1' in client.hget(STATE_KEY, "sleeper"),
                15,
                what="state published again",
            )
        finally:
            h.stop()
    finally:
        own.cleanup()

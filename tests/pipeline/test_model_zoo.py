"""Model zoo and anomaly detection with real parts, on SQLite and PostgreSQL.

One stack per database: the API under gunicorn as the Procfile starts it and a real Celery worker
consuming the detection and analysis queues (built-in OpenCV detector, rule-based analyser), on a
Redis database of their own. Through it:

* the registry lists the built-in models after a detection ran, with `inference_count` and
  `last_used` moving, and the latency history's buckets are the inference times the jobs recorded;
* a camera fed a steady weekly baseline (synthetic batches with controlled times, analysed by the
  worker) and then a burst is flagged exactly when an independent EWMA says the deviation exceeds
  `threshold_stdev`; raising the threshold by PATCH stops the flag on the next event; a slot below
  `min_samples` flags nothing; `anomaly_only` rules and the events `anomaly` filter follow the flag.

In-process, on both databases: an HTTP detector stub that reports its model and VRAM in `/health`
shows up with them, and an LLM stub's calls on the analysis path are counted (its prompt names the
baseline); the GPU path through an injected NVML-shaped object; the no-GPU path for real.
"""

from __future__ import annotations

import math
import os
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from app.alerts.rules import matches
from app.core.db import session_scope
from app.core.settings import Settings, replace
from app.core.stats import percentile
from app.models import AlertRule, AnomalyBaseline, AuditLog, Camera, Detection, DetectionBatch, Event
from app.ops import models as zoo
from app.pipeline.ai import usage
from app.pipeline.ai.detectors import BuiltinDetector
from tests.ai_servers import YOLO_ANSWER, completion
from tests.helpers import API_KEY, worker_env
from tests.servers import ApiServer, CeleryWorker, wait_for

HOG, FACE = BuiltinDetector.HOG_MODEL, BuiltinDetector.FACE_MODEL
HEADERS = {"X-API-Key": API_KEY}
MIB = 1024 * 1024


# ---- the stack ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request, redis_databases, tmp_path_factory):
    from app.core.migrate import upgrade

    tmp = tmp_path_factory.mktemp(f"zoo_{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp}/zoo.db"
    else:
        url = request.getfixturevalue("pg").create_database(f"zoo_{uuid.uuid4().hex[:12]}")
    upgrade(url)
    root = tmp / "cameras"
    root.mkdir()
    with redis_databases.lease() as db:
        env = worker_env(
            REDIS_URL=db.url,
            DATABASE_URL=url,
            VIGIL_VAR_DIR=str(tmp / "var"),
            VIGIL_CAMERA_ROOT=str(root),
            VIGIL_THUMBNAIL_DIR=str(tmp / "thumbs"),
            VIGIL_PROMETHEUS_URL="",
            VIGIL_LOG_DB="false",
        )
        for key in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "VIGIL_VRAM_BUDGET_MB"):
            env.pop(key, None)
        # One real worker process consumes both families (the Procfile's command, both -Q lists): half
        # the start-up and shutdown of two, and the jobs here run one at a time anyway.
        workers = [CeleryWorker(env, "pipeline_worker", ["detection:high", "detection", "analysis"])]
        api = ApiServer(env, workers=1, threads=4)
        try:
            for w in workers:
                w.start(wait=False)
            api.start()
            for w in workers:
                w.wait_ready(60)
            settings = Settings.from_env(env)
            yield SimpleNamespace(url=api.url, settings=settings, root=root, db=request.param)
        finally:
            api.stop()
            for w in workers:
                w.stop()


def get(stack, path: str):
    import requests

    return requests.get(stack.url + path, timeout=30)


def send(stack, method: str, path: str, **kwargs):
    import requests

    return requests.request(method, stack.url + path, headers=HEADERS, timeout=30, **kwargs)


def enqueue(stack, task: str, payload: dict) -> str:
    r = send(stack, "POST", "/api/v1/platform/system/jobs", json={"task": task, "payload": payload})
    assert r.status_code == 202, r.text
    return r.json()["data"]["job_id"]


def entry(body: dict, name: str) -> dict:
    [found] = [m for m in body["models"] if m["name"] == name]
    return found


# ---- the registry after real detections -----------------------------------------------------------------------
@pytest.mark.slow
def test_builtin_models_counted_by_real_detections_and_latency_history(stack, photos):
    folder = stack.root / "zoo_cam"
    folder.mkdir()
    before = get(stack, "/api/system/models").json()
    assert {m["name"] for m in before["models"]} == {HOG, FACE}
    assert all(m["inference_count"] == 0 and m["last_used"] is None for m in before["models"])
    assert all(m["status"] == "unloaded" and m["enabled"] for m in before["models"])

    last_used: dict[str, str] = {}
    for n, photo in enumerate(("astronaut", "coffee"), start=1):
        shutil.copyfile(photos[photo], folder / f"{photo}.jpg")
        enqueue(stack, "detection", {"camera_id": "zoo_cam", "path": str(folder / f"{photo}.jpg")})

        def counted(n=n):
            body = get(stack, "/api/system/models").json()
            return body if entry(body, HOG)["inference_count"] == n else None

        body = wait_for(counted, 60, interval=0.1, what=f"detection {n} recorded")
        for name in (HOG, FACE):
            model = entry(body, name)
            assert model["inference_count"] == n and model["status"] == "loaded" and model["enabled"] is True
            assert model["category"] == "detection" and model["backend"] == "builtin"
            assert model["vram_mb"] == 0  # the built-in models run on the CPU
            assert model["load_time_ms"] is not None and model["load_time_ms"] >= 0
            assert model["last_used"] is not None and model["last_used"] > last_used.get(name, "")
            last_used[name] = model["last_used"]
    gpu = zoo.gpu_memory()
    assert body["vram_budget_mb"] == (gpu["total_mb"] if gpu else None)
    assert body["vram_used_mb"] == 0 and body["vram_available_mb"] == body["vram_budget_mb"]

    one = get(stack, f"/api/system/models/{HOG}")
    assert one.status_code == 200 and one.json()["inference_count"] == 2 and one.json()["name"] == HOG
    missing = get(stack, "/api/system/models/no-such-model")
    assert missing.status_code == 404 and "no-such-model" in missing.json()["detail"]

    status = get(stack, "/api/system/model-zoo/status").json()
    assert status["categories"]["detection"] == {"loaded": 2, "total": 2}
    assert status["categories"]["pose"] == {"loaded": 0, "total": 0}
    assert {m["name"]: set(m) for m in status["models"]} == {
        HOG: {"name", "category", "status", "vram_mb"},
        FACE: {"name", "category", "status", "vram_mb"},
    }

    # controlled samples half an hour ago, beside the two real ones
    now = time.time()
    at = (now - 1800) // 60 * 60 + 5
    usage.record(stack.settings, {FACE: 10.0}, backend="builtin", at=at)
    for value in (20.0, 30.0, 40.0):
        usage.record(stack.settings, {FACE: value}, backend="builtin", at=at + 1)
    for name in (HOG, FACE):
        recorded = usage.samples(stack.settings, name, now - 3600)
        assert len(recorded) == (2 if name == HOG else 6)
        r = get(stack, f"/api/system/model-zoo/latency/history?model={name}&since=60&bucket_seconds=60")
        assert r.status_code == 200, r.text
        history = r.json()
        expected: dict[int, list[float]] = {}
        for ts, ms in recorded:
            expected.setdefault(int(ts // 60) * 60, []).append(ms)
        assert history["model"] == name and history["count"] == len(expected) == len(history["snapshots"])
        for snap, start in zip(history["snapshots"], sorted(expected)):
            values = sorted(expected[start])
            assert snap["timestamp"] == datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            assert snap["sample_count"] == len(values)
            assert snap["avg_ms"] == pytest.approx(sum(values) / len(values), abs=1e-3)
            assert snap["p50_ms"] == pytest.approx(percentile(values, 50), abs=1e-3)
            assert snap["p95_ms"] == pytest.approx(percentile(values, 95), abs=1e-3)
    controlled = history["snapshots"][0]  # FACE's oldest bucket holds only the controlled samples
    assert (controlled["avg_ms"], controlled["p50_ms"], controlled["p95_ms"], controlled["sample_count"]) == (
        25.0,
        25.0,
        38.5,
        4,
    )
    short = get(stack, f"/api/system/model-zoo/latency/history?model={FACE}&since=5&bucket_seconds=3600").json()
    assert short["count"] == 1 and short["snapshots"][0]["sample_count"] == 2  # the two real ones only
    for bad in (f"model={HOG}&since=0", f"model={HOG}&since=1441", f"model={HOG}&bucket_seconds=9", "since=5"):
        assert get(stack, f"/api/system/model-zoo/latency/history?{bad}").status_code == 400, bad
    assert get(stack, "/api/system/model-zoo/latency/history?model=nope").status_code == 404


# ---- anomaly detection ----------------------------------------------------------------------------------------
class Reference:
    """The baseline of one slot as the spec describes it, computed independently of app/pipeline/anomaly.py:
    EWMA mean and variance, judged before the event is added, stdev floored at half a count."""

    def __init__(self, decay: float):
        self.decay, self.mean, self.var, self.n = decay, 0.0, 0.0, 0

    def judge(self, x: float, min_samples: int, threshold: float) -> tuple[float | None, bool]:
        if self.n < min_samples:
            return None, False
        z = abs(x - self.mean) / max(math.sqrt(self.var), 0.5)  # events_per_hour is 1 every week: deviation 0
        return z, z > threshold

    def add(self, x: float) -> None:
        if self.n == 0:
            self.mean, self.var = x, 0.0
        else:
            d = x - self.mean
            self.mean += self.decay * d
            self.var = (1 - self.decay) * (self.var + self.decay * d * d)
        self.n += 1


def add_batch(settings, camera_id: str, started: datetime, count: int) -> str:
    """A closed batch of `count` person detections from `started` on, as the batch closer leaves it."""
    batch_id = uuid.uuid4().hex
    with session_scope(settings) as session:
        if session.get(Camera, camera_id) is None:
            session.add(Camera(id=camera_id, name=camera_id.title(), folder_path=f"/cams/{camera_id}"))
            session.flush()
        session.add_all(
            Detection(
                camera_id=camera_id,
                file_path=f"/cams/{camera_id}/{batch_id}_{i}.jpg",
                object_type="person",
                confidence=0.9,
                bbox_x=1,
                bbox_y=2,
                bbox_width=30,
                bbox_height=60,
                batch_id=batch_id,
                job_id=f"job-{batch_id[:12]}-{i}",
                detected_at=started + timedelta(seconds=i),
            )
            for i in range(count)
        )
        session.add(
            DetectionBatch(
                id=batch_id,
                camera_id=camera_id,
                status="closed",
                close_reason="idle",
                detection_count=count,
                opened_at=started,
                last_detection_at=started + timedelta(seconds=max(0, count - 1)),
                closed_at=started + timedelta(seconds=count + 30),
            )
        )
    return batch_id


def analysed(stack, camera_id: str, started: datetime, count: int) -> Event:
    batch_id = add_batch(stack.settings, camera_id, started, count)
    enqueue(stack, "analysis", {"batch_id": batch_id, "camera_id": camera_id})

    def event():
        with session_scope(stack.settings) as session:
            return session.execute(select(Event).where(Event.batch_id == batch_id)).scalar_one_or_none()

    return wait_for(event, 30, interval=0.05, what=f"the event of batch {batch_id}")


@pytest.mark.slow
def test_camera_baseline_flags_a_burst_exactly_at_the_threshold(stack):
    config = get(stack, "/api/system/anomaly-config").json()
    assert config == {"threshold_stdev": 2.0, "min_samples": 10, "decay_factor": 0.1, "window_days": 28}
    refused = send(stack, "PATCH", "/api/system/anomaly-config", json={"decay_factor": 0.5, "window_days": 3})
    assert refused.status_code == 422
    assert {e["field"] for e in refused.json()["errors"]} == {"decay_factor", "window_days"}
    r = send(stack, "PATCH", "/api/system/anomaly-config", json={"min_samples": 5, "threshold_stdev": 2.5})
    assert r.status_code == 200 and r.json() == config | {"min_samples": 5, "threshold_stdev": 2.5}
    assert get(stack, "/api/system/anomaly-config").json() == r.json()
    with session_scope(stack.settings) as session:
        [audit] = session.execute(select(AuditLog).where(AuditLog.resource_type == "anomaly_config")).scalars()
        assert audit.action == "settings_changed" and audit.actor == "api_key:api-key"
        assert audit.details["changes"] == {
            "min_samples": {"old": 10, "new": 5},
            "threshold_stdev": {"old": 2.0, "new": 2.5},
        }

    monday = datetime(2026, 6, 1, 12, 0, 5, tzinfo=UTC)
    assert monday.weekday() == 0
    camera = f"anom_{stack.db}"
    # another slot (Monday 15:00) below min_samples: even a burst is not judged
    for week, count in enumerate((2, 2, 30)):
        ev = analysed(stack, camera, monday + timedelta(weeks=week, hours=3), count)
        assert ev.anomaly_score is None and ev.is_anomaly is False

    # Monday 12:00: a steady baseline, one event a week, then a burst, then the same burst again after the
    # threshold was raised. Each is judged against the baseline before it.
    ref, threshold, flags = Reference(0.1), 2.5, []
    plan = [2, 3, 2, 3, 2, 3, 2, 3, 12, "raise", 12]
    week = 0
    for step in plan:
        if step == "raise":
            z_next, _ = ref.judge(12, 5, threshold)
            assert z_next is not None and 2.5 < z_next < 6.0  # would still be flagged at 2.5
            threshold = 6.0
            r = send(stack, "PATCH", "/api/system/anomaly-config", json={"threshold_stdev": threshold})
            assert r.status_code == 200 and r.json()["threshold_stdev"] == 6.0
            continue
        expected_score, expected_flag = ref.judge(step, 5, threshold)
        ev = analysed(stack, camera, monday + timedelta(weeks=week), step)
        week += 1
        if expected_score is None:
            assert ev.anomaly_score is None, (week, step)
        else:
            assert ev.anomaly_score == pytest.approx(expected_score, abs=1e-3), (week, step)
        assert ev.is_anomaly is expected_flag, (week, step, expected_score, threshold)
        flags.append((ev.id, expected_flag, ev.reasoning))
        ref.add(step)
    assert [f for _, f, _ in flags] == [False] * 8 + [True, False]
    burst_id, _, reasoning = flags[8]
    assert "unusual activity for Monday 12:00-12:59" in reasoning  # the analyser was told

    with session_scope(stack.settings) as session:
        rows = {
            r.metric: r
            for r in session.execute(
                select(AnomalyBaseline).where(AnomalyBaseline.camera_id == camera, AnomalyBaseline.slot == 12)
            ).scalars()
        }
        assert rows["detections_per_batch"].samples == 10 and rows["events_per_hour"].samples == 10
        assert rows["detections_per_batch"].mean == pytest.approx(ref.mean, abs=1e-9)
        assert rows["detections_per_batch"].variance == pytest.approx(ref.var, abs=1e-9)
        assert (rows["events_per_hour"].mean, rows["events_per_hour"].variance) == (1.0, 0.0)
        assert {r.slot for r in session.execute(select(AnomalyBaseline)).scalars()} == {12, 15}

        # alert rules: `anomaly_only` matches the flagged event only
        rule = AlertRule(
            name="anomalies", severity="high", risk_threshold=0, channels=["webhook"], anomaly_only=True, enabled=True
        )
        for ev_id, flagged, _ in flags:
            event = session.get(Event, ev_id)
            result = matches(rule, event, {"person"}, event.started_at)
            assert result.matched is flagged, result.reasons

    listed = get(stack, f"/api/events?camera_id={camera}&anomaly=true").json()
    assert [e["id"] for e in listed["events"]] == [burst_id] and listed["events"][0]["is_anomaly"] is True
    assert get(stack, f"/api/events?camera_id={camera}&anomaly=false").json()["count"] == 12
    created = send(
        stack,
        "POST",
        "/api/alerts/rules",
        json={"name": "odd", "severity": "high", "risk_threshold": 0, "channels": ["webhook"], "anomaly_only": True},
    )
    assert created.status_code == 201, created.text
    assert created.json()["anomaly_only"] is True
    assert send(stack, "PATCH", "/api/system/anomaly-config", json={"threshold_stdev": 2.0}).status_code == 200


# ---- in-process: an HTTP detector stub, NVML ------------------------------------------------------------------
def test_http_detector_stub_reports_its_model_and_vram(
    db_url, redis_db, settings, scripted_server, photos, tmp_path, monkeypatch
):
    from app.pipeline.detections import process_image

    health = {"status": "ok", "model": "yolo26-stub", "vram_mb": 2048, "load_time_ms": 1250}
    state = {"healthy": True}

    def respond(req):
        if req.path == "/health":
            return (200, health, 0) if state["healthy"] else (503, {"status": "down"}, 0)
        if req.path == "/models":
            return 200, {"object": "list", "data": [{"id": "nemotron-stub"}]}, 0
        if req.path == "/chat/completions":
            answer = '{"risk_score": 40, "risk_level": "medium", "summary": "s", "reasoning": "r"}'
            return 200, completion(answer), 0
        return 200, YOLO_ANSWER, 0

    server = scripted_server(respond)
    root = tmp_path / "cameras"
    (root / "stub_cam").mkdir(parents=True)
    image = root / "stub_cam" / "a.jpg"
    shutil.copyfile(photos["astronaut"], image)
    s = redis_db.settings(
        settings,
        database_url=db_url,
        detector_backend="http",
        detector_url=server.url,
        camera_root=root,
        thumbnail_dir=tmp_path / "thumbs",
        vram_budget_mb=None,
        analyser_backend="llm",
        llm_url=server.url,
        llm_model="nemotron-stub",
        llm_vram_mb=4096,
    )
    outcome = process_image(
        s,
        job_id=uuid.uuid4().hex,
        camera_id="stub_cam",
        path=str(image),
        file_hash=None,
        seen_at=None,
        started_at=time.time(),
        first_attempt=True,
    )
    assert outcome.kept == 1 and outcome.inference_time_ms == 12.5
    body = zoo.registry(s, nvml=NoGpu())
    model = entry(body, "yolo26-stub")
    assert model == {
        "name": "yolo26-stub",
        "category": "detection",
        "status": "loaded",
        "vram_mb": 2048,
        "last_used": model["last_used"],
        "enabled": True,
        "load_time_ms": 1250.0,
        "inference_count": 1,
        "backend": "http",
    }
    assert model["last_used"] is not None
    assert {m["status"] for m in body["models"] if m["backend"] == "builtin"} == {"disabled"}
    llm = entry(body, "nemotron-stub")
    assert (llm["category"], llm["status"], llm["vram_mb"], llm["inference_count"]) == ("llm", "loaded", 4096, 0)

    # the analysis path records the LLM's calls, and tells it about the camera's baseline
    from app.pipeline.events import analyse_batch

    batch_id = add_batch(s, "stub_cam", datetime.now(UTC) - timedelta(minutes=1), 2)
    event = analyse_batch(s, batch_id, started_at=time.time(), first_attempt=True, final_attempt=False)
    assert event["analyser"] == "llm:nemotron-stub" and event["is_anomaly"] is False
    assert event["anomaly_score"] is None  # the slot's first event
    [chat] = [r for r in server.requests if r.path == "/chat/completions"]
    assert "Activity baseline" in chat.json()["messages"][1]["content"]
    body = zoo.registry(s, nvml=NoGpu())
    llm = entry(body, "nemotron-stub")
    assert llm["inference_count"] == 1 and llm["last_used"] is not None
    assert zoo.latency_history(s, "nemotron-stub", 5, 60)["snapshots"][0]["sample_count"] == 1
    assert (body["vram_budget_mb"], body["vram_used_mb"], body["vram_available_mb"]) == (None, 2048 + 4096, None)
    budgeted = zoo.registry(replace(s, vram_budget_mb=8000), nvml=NoGpu())
    assert (budgeted["vram_budget_mb"], budgeted["vram_used_mb"], budgeted["vram_available_mb"]) == (8000, 6144, 1856)
    history = zoo.latency_history(s, "yolo26-stub", 5, 60)
    assert history["count"] == 1 and history["snapshots"][0]["avg_ms"] == 12.5

    state["healthy"] = False
    monkeypatch.setattr(zoo, "INFO_MAX_AGE", 0.0)  # the last /health answer no longer stands for "recently"
    down = zoo.registry(s, nvml=NoGpu())
    assert entry(down, "http-detector")["status"] == "error"  # unnamed now: the configured name
    assert entry(down, "http-detector")["inference_count"] == 1  # same history, recorded by backend


class NoGpu:
    """NVML as it answers without a driver."""

    def nvmlInit(self):
        import pynvml

        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)


class FakeNvml:
    """Shaped like `pynvml` for what the registry asks: devices, their memory and compute processes."""

    def __init__(self, total_mb: int, processes: dict[int, int | None]):
        self.total_mb, self.processes = total_mb, processes
        self.inits = self.shutdowns = 0

    def nvmlInit(self):
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, index):
        return {"index": index}

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(total=self.total_mb * MIB, used=0, free=self.total_mb * MIB)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [
            SimpleNamespace(pid=pid, usedGpuMemory=None if mb is None else mb * MIB)
            for pid, mb in self.processes.items()
        ]


def test_gpu_path_through_an_injected_nvml(redis_db, settings):
    s = redis_db.settings(settings, vram_budget_mb=None, detector_backend="builtin")
    usage.record(s, {HOG: 5.0, FACE: 3.0}, backend="builtin", load_times={HOG: 1.5, FACE: 20.0})
    nvml = FakeNvml(8192, {os.getpid(): 600, os.getpid() + 1_000_000: 1000, 7: None})
    body = zoo.registry(s, nvml=nvml)
    assert nvml.inits == 1 and nvml.shutdowns == 1
    assert (entry(body, HOG)["vram_mb"], entry(body, FACE)["vram_mb"]) == (300, 300)  # one process, two models
    assert (entry(body, HOG)["load_time_ms"], entry(body, FACE)["load_time_ms"]) == (1.5, 20.0)
    assert (body["vram_budget_mb"], body["vram_used_mb"], body["vram_available_mb"]) == (8192, 600, 7592)
    budgeted = zoo.registry(replace(s, vram_budget_mb=1000), nvml=FakeNvml(8192, {os.getpid(): 600}))
    assert (budgeted["vram_budget_mb"], budgeted["vram_available_mb"]) == (1000, 400)
    elsewhere = zoo.registry(s, nvml=FakeNvml(8192, {os.getpid() + 1_000_000: 1000}))
    assert entry(elsewhere, HOG)["vram_mb"] == 0  # its processes hold no GPU memory: the CPU figure


def test_no_gpu_path_for_real(redis_db, settings):
    if zoo.gpu_memory() is not None:
        pytest.skip("this machine has a GPU NVML sees")
    s = redis_db.settings(settings, vram_budget_mb=None, detector_backend="builtin")
    body = zoo.registry(s)
    assert (body["vram_budget_mb"], body["vram_used_mb"], body["vram_available_mb"]) == (None, 0, None)
    assert {m["vram_mb"] for m in body["models"]} == {0}
    assert zoo.registry(replace(s, vram_budget_mb=512))["vram_available_mb"] == 512

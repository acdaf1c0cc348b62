"""Detector backends: the built-in OpenCV one on real photographs, the HTTP one against a real
local model server (answers, timeouts, 5xx, garbage, 4xx), and both behind the real breaker."""

import time
import uuid

import pytest
from sqlalchemy import select, update

from app.core.db import session_scope
from app.core.redis_client import get_redis
from app.core.settings import replace
from app.models import Detection
from app.pipeline.ai.breakers import BreakerConfig, CircuitBreaker, CircuitOpenError, ServiceRejected, breaker
from app.pipeline.ai.detectors import BuiltinDetector, DetectorUnavailable, HttpDetector, UnreadableImage
from tests.ai_servers import YOLO_ANSWER


def test_builtin_finds_the_person_in_astronaut_and_nothing_in_coffee(photos):
    detector = BuiltinDetector()
    people = detector.detect(photos["astronaut"])
    confident = [d for d in people.detections if d.confidence >= 0.5]
    assert confident, people
    assert {d.object_type for d in confident} <= {"person", "face"}
    face = max(confident, key=lambda d: d.confidence)
    # the astronaut's face is in the upper middle of the 512x512 picture
    assert 150 < face.x + face.width / 2 < 350 and face.y + face.height / 2 < 250
    assert people.image_size == (512, 512) and people.inference_time_ms > 0
    empty = detector.detect(photos["coffee"])
    assert [d for d in empty.detections if d.confidence >= 0.5] == []


def test_builtin_rejects_an_undecodable_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg \xff\xd9")
    with pytest.raises(UnreadableImage):
        BuiltinDetector().detect(bad)


def test_http_detector_parses_the_model_server_answer(scripted_server, photos):
    server = scripted_server(lambda req: (200, YOLO_ANSWER, 0))
    result = HttpDetector(server.url, timeout=5).detect(photos["astronaut"])
    assert [(d.object_type, d.confidence, d.x, d.y, d.width, d.height) for d in result.detections] == [
        ("person", 0.91, 10, 20, 30, 60),
        ("car", 0.3, 1, 2, 3, 4),
    ]
    assert result.inference_time_ms == 12.5
    req = server.requests[0]
    assert req.method == "POST" and req.path == "/detect"
    assert req.headers["Content-Type"].startswith("multipart/form-data")
    assert photos["astronaut"].read_bytes() in req.body  # the image itself was sent


@pytest.mark.parametrize(
    "answer,kind,message",
    [
        ((503, {"detail": "loading"}, 0), DetectorUnavailable, "HTTP 503"),
        ((500, "Internal Server Error", 0), DetectorUnavailable, "HTTP 500"),
        ((200, "<html>not json</html>", 0), DetectorUnavailable, "not the expected JSON"),
        (
            (200, {"detections": [{"class": "person", "confidence": 7}]}, 0),
            DetectorUnavailable,
            "not the expected JSON",
        ),
        ((200, {"boxes": []}, 0), DetectorUnavailable, "not the expected JSON"),
        ((200, YOLO_ANSWER, 2.0), DetectorUnavailable, "timed out"),
        ((415, {"detail": "unsupported image"}, 0), ServiceRejected, "HTTP 415"),
    ],
)
def test_http_detector_failures(scripted_server, photos, answer, kind, message):
    server = scripted_server(lambda req: answer)
    t0 = time.monotonic()
    with pytest.raises(kind, match=message):
        HttpDetector(server.url, timeout=0.5).detect(photos["coffee"])
    assert time.monotonic() - t0 < 5


def test_http_detector_unreachable(photos):
    from tests.servers import free_port

    with pytest.raises(DetectorUnavailable, match="unreachable"):
        HttpDetector(f"http://127.0.0.1:{free_port()}", timeout=1).detect(photos["coffee"])


def test_breaker_opens_after_five_failures_ignores_4xx_and_recovers_through_half_open(
    scripted_server, photos, settings
):
    mode = {"answer": (500, "boom", 0)}
    server = scripted_server(lambda req: mode["answer"] if req.path == "/detect" else (200, {}, 0))
    detector = HttpDetector(server.url, timeout=1)
    b = CircuitBreaker(
        f"det-{uuid.uuid4().hex[:8]}",
        get_redis(settings),
        BreakerConfig(failure_threshold=5, recovery_seconds=1.0, half_open_max_calls=3, success_threshold=2),
    )
    path = photos["coffee"]

    mode["answer"] = (422, {"detail": "bad image"}, 0)
    for _ in range(8):
        with pytest.raises(ServiceRejected):
            b.call(detector.detect, path)
    assert b.snapshot()["state"] == "closed"  # eight 4xx answers: the service is up

    mode["answer"] = (500, "boom", 0)
    for _ in range(5):
        with pytest.raises(DetectorUnavailable):
            b.call(detector.detect, path)
    assert b.snapshot()["state"] == "open"
    before = server.calls("/detect")
    for _ in range(3):
        with pytest.raises(CircuitOpenError):
            b.call(detector.detect, path)
    assert server.calls("/detect") == before  # refused without touching the server

    time.sleep(1.1)
    mode["answer"] = (200, YOLO_ANSWER, 0)
    assert b.call(detector.detect, path).detections
    assert b.snapshot()["state"] == "half_open"
    b.call(detector.detect, path)
    assert b.snapshot()["state"] == "closed"


def test_a_success_recorded_on_a_pipeline_counts_once_it_is_sent_and_a_failure_at_once(
    scripted_server, photos, settings
):
    """`record_on`: the detection task sends the breaker's success with its other bookkeeping. A
    half-open breaker closes on successes sent that way; a failure never waits for the pipeline."""
    mode = {"answer": (500, "boom", 0)}
    server = scripted_server(lambda req: mode["answer"])
    detector = HttpDetector(server.url, timeout=1)
    r = get_redis(settings)
    b = CircuitBreaker(
        f"det-{uuid.uuid4().hex[:8]}",
        r,
        BreakerConfig(failure_threshold=2, recovery_seconds=0.5, half_open_max_calls=3, success_threshold=2),
    )
    path = photos["coffee"]
    pipe = r.pipeline(transaction=False)
    for _ in range(2):
        with pytest.raises(DetectorUnavailable):
            b.call(detector.detect, path, record_on=pipe)
    assert b.snapshot()["state"] == "open" and len(pipe) == 0  # recorded at once, nothing queued

    time.sleep(0.6)
    mode["answer"] = (200, YOLO_ANSWER, 0)
    for _ in range(2):
        assert b.call(detector.detect, path, record_on=pipe).detections
    assert b.snapshot()["state"] == "half_open" and len(pipe) == 2  # queued, not sent
    pipe.execute()
    snap = b.snapshot()
    assert snap["state"] == "closed" and int(snap["success_count"]) == 2


def test_process_image_with_http_backend_filters_stores_and_batches(
    scripted_server, photos, settings, tmp_path, reset_ai_breakers
):
    """The detection service end to end with the HTTP backend: threshold applied, rows with bbox and
    thumbnail in SQL, detections in the camera's batch, stage samples recorded."""
    from app.pipeline.batches import get_aggregator
    from app.pipeline.detections import process_image

    server = scripted_server(lambda req: (200, YOLO_ANSWER, 0))
    root = tmp_path / "cams"
    (root / "porch").mkdir(parents=True)
    image = root / "porch" / "a.jpg"
    image.write_bytes(photos["astronaut"].read_bytes())
    s = replace(
        settings, camera_root=root, detector_backend="http", detector_url=server.url, thumbnail_dir=tmp_path / "thumbs"
    )
    job_id = str(uuid.uuid4())
    camera = f"porch_{uuid.uuid4().hex[:6]}"
    r = get_redis(s)
    stages = ("watch", "watch_to_detect", "detect", "detect_to_batch")
    samples_before = {stage: r.zcard(f"vigil:lat:{stage}") for stage in stages}
    successes_before = int(breaker("detector", s).snapshot()["success_count"])
    now = time.time()
    out = process_image(
        s,
        job_id=job_id,
        camera_id=camera,
        path=str(image),
        file_hash=None,
        seen_at=now - 0.05,
        started_at=now,
        first_attempt=True,
    )
    assert out.found == 2 and out.kept == 1 and out.batch_id  # the 0.3 car is under the 0.5 threshold
    with session_scope(s) as session:
        rows = list(session.execute(select(Detection).where(Detection.job_id == job_id)).scalars())
    assert len(rows) == 1
    row = rows[0]
    assert (row.object_type, row.bbox_x, row.bbox_y, row.bbox_width, row.bbox_height) == ("person", 10, 20, 30, 60)
    assert row.batch_id == out.batch_id and row.thumbnail_path and (tmp_path / "thumbs" / camera).is_dir()
    batch = get_aggregator(s).get(out.batch_id)
    assert batch["camera_id"] == camera and batch["detection_ids"] == [row.id]
    # the bookkeeping sent together at the end: one sample per stage, the breaker's success
    assert {stage: r.zcard(f"vigil:lat:{stage}") - samples_before[stage] for stage in stages} == dict.fromkeys(
        stages, 1
    )
    assert int(breaker("detector", s).snapshot()["success_count"]) == successes_before + 1

    def rerun():  # the same job delivered again
        return process_image(
            s,
            job_id=job_id,
            camera_id=camera,
            path=str(image),
            file_hash=None,
            seen_at=now,
            started_at=now,
            first_attempt=False,
        )

    again = rerun()
    assert again.repeated and again.detection_ids == [row.id] and server.calls("/detect") == 1
    # stored, then stopped before its batch (the batch-id update lost): a re-run batches them, detects nothing
    with session_scope(s) as session:
        session.execute(update(Detection).where(Detection.id == row.id).values(batch_id=None))
    batched = r.zcard("vigil:lat:detect_to_batch")
    late = rerun()
    assert late.repeated and late.batch_id and server.calls("/detect") == 1
    assert r.zcard("vigil:lat:detect_to_batch") == batched + 1
    with session_scope(s) as session:
        assert session.get(Detection, row.id).batch_id == late.batch_id
    get_redis(s).zrem("vigil:batches:deadlines", late.batch_id)
    get_redis(s).zrem("vigil:batches:deadlines", out.batch_id)  # keep the session's closer out of it


def test_process_image_refuses_paths_outside_the_root(settings, tmp_path, photos):
    from app.pipeline.detections import InvalidImagePath, process_image

    root = tmp_path / "cams"
    root.mkdir()
    s = replace(settings, camera_root=root)
    with pytest.raises(InvalidImagePath):
        process_image(
            s,
            job_id="x",
            camera_id="c",
            path=str(photos["astronaut"]),
            file_hash=None,
            seen_at=None,
            started_at=time.time(),
            first_attempt=True,
        )


def test_every_retry_is_jittered_and_capped_within_the_visibility_timeout(settings):
    """One cap for every countdown, and it fits the visibility timeout's budget: a message held for its
    countdown, then waiting behind the longest job, must not be redelivered (docs/architecture.md)."""
    from app.celery.app import celery
    from app.celery.config import RETRY_COUNTDOWN_MAX

    celery.loader.import_default_modules()
    tasks = {name: task for name, task in celery.tasks.items() if name.startswith("vigil.")}
    retrying = {name: task for name, task in tasks.items() if getattr(task, "autoretry_for", ())}
    assert set(retrying) == {
        "vigil.detection.detect",
        "vigil.analysis.analyze",
        "vigil.notification.send",
        "vigil.notification.fire_alerts",
    }
    for name, task in retrying.items():
        assert (task.retry_backoff_max, task.retry_jitter) == (RETRY_COUNTDOWN_MAX, True), name
    assert {name: (task.retry_backoff, task.max_retries) for name, task in retrying.items()} == {
        "vigil.detection.detect": (2, 12),
        "vigil.analysis.analyze": (5, 3),
        "vigil.notification.send": (2, 8),
        "vigil.notification.fire_alerts": (2, 5),
    }
    longest = max(task.time_limit or celery.conf.task_time_limit for task in tasks.values())
    assert settings.visibility_timeout > 2 * longest + RETRY_COUNTDOWN_MAX


@pytest.mark.slow
def test_detection_retries_are_jittered_and_capped_by_a_real_worker(settings, photos, redis_db):
    """A real detection worker whose detector is unreachable. Jobs arrive as their eleventh attempt,
    where the plain exponential is 2 * 2 ** 10 = 2048 s: each is retried after at most the cap, and
    the countdowns are spread between 0 and the cap (jitter), not all the same."""
    import re
    from datetime import datetime

    from app.celery.app import create_celery
    from app.celery.config import RETRY_COUNTDOWN_MAX
    from app.jobs.registry import JobRegistry, get_registry
    from tests.helpers import worker_env
    from tests.servers import CeleryWorker, free_port, wait_for

    # A broker of its own (no other worker competes) and a detector that is not there.
    env = worker_env(
        REDIS_URL=redis_db.url,
        VIGIL_DETECTOR_BACKEND="http",
        VIGIL_DETECTOR_URL=f"http://127.0.0.1:{free_port()}",
        VIGIL_BREAKER_FAILURE_THRESHOLD="1000",
    )  # the breaker stays closed: backoff, not retry_after
    worker = CeleryWorker(env, "detection_worker", ["detection"], concurrency=1).start()
    job_ids = [str(uuid.uuid4()) for _ in range(8)]
    try:
        cam = settings.camera_root / f"jitter_{uuid.uuid4().hex[:6]}"
        cam.mkdir(parents=True)
        image = cam / "a.jpg"
        image.write_bytes(photos["coffee"].read_bytes())
        app = create_celery(redis_db.settings(settings))
        sent = time.time()
        for job_id in job_ids:
            app.send_task(
                "vigil.detection.detect",
                queue="detection",
                task_id=job_id,
                retries=10,
                kwargs={"camera_id": cam.name, "path": str(image)},
            )
        registry = JobRegistry(redis_db.client(decode_responses=True))

        def retried():
            jobs = [registry.get(job_id) or {} for job_id in job_ids]
            return all("Retry in" in (job.get("error") or "") for job in jobs) and jobs

        jobs = wait_for(retried, 30, interval=0.2, what="every job's retry")
        seen = time.time()
        countdowns = []
        for job in jobs:
            assert "unreachable" in job["error"] and job["state"] == "waiting", job
            countdown = int(re.search(r"Retry in (\d+)s", job["error"]).group(1))
            eta = datetime.fromisoformat(job["eta"]).timestamp()
            assert sent + countdown - 1 <= eta <= seen + countdown + 1, job  # the message is held that long
            countdowns.append(countdown)
        assert all(0 <= c <= RETRY_COUNTDOWN_MAX for c in countdowns), countdowns
        # Uniform on 0..300: eight countdowns within 10 s of each other would have odds below 1e-9.
        assert max(countdowns) - min(countdowns) > 10, countdowns
    finally:
        worker.stop()
        for job_id in job_ids:  # the publish was recorded in this process's registry too
            get_registry().forget(job_id)


@pytest.mark.slow
def test_detection_pool_processes_load_the_detector_before_their_first_job(redis_db):
    """`celery -A workers worker` for the detection group imports OpenCV before it forks and loads the models
    in each pool process as it starts; the other groups never import OpenCV."""
    from pathlib import Path

    from tests.helpers import worker_env
    from tests.servers import CeleryWorker, wait_for

    def maps_opencv(pid: int) -> bool:
        return "/cv2/" in Path(f"/proc/{pid}/maps").read_text()

    env = worker_env(REDIS_URL=redis_db.url, VIGIL_DETECTOR_BACKEND="builtin")
    detection = CeleryWorker(env, "detection_worker", ["detection"], concurrency=2).start()
    analysis = CeleryWorker(env, "analysis_worker", ["analysis"], concurrency=1).start()
    try:
        pool = wait_for(lambda: len(p := detection.pool_pids()) == 2 and p, 30, what="two detection pool processes")
        assert maps_opencv(detection.proc.pid), "the parent imports OpenCV before it forks"
        assert all(maps_opencv(pid) for pid in pool)
        wait_for(lambda: detection.log().count("detector models loaded") == 2, 30, what="each pool process's load")
        [analysis_pool] = wait_for(lambda: analysis.pool_pids(), 30, what="the analysis pool process")
        assert not maps_opencv(analysis.proc.pid) and not maps_opencv(analysis_pool)
    finally:
        detection.stop()
        analysis.stop()

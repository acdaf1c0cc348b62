"""The file watcher with a real observer, real Redis and real SQL: what it enqueues and what not."""

import os
import threading
import time

import pytest
from sqlalchemy import select

from app.core.db import session_scope
from app.core.settings import replace
from app.jobs.registry import get_registry
from app.models import Camera
from workers.host.services.watcher import FileWatcher, image_complete


def jpeg() -> bytes:
    """Fresh content each call (the watcher drops repeated content on purpose)."""
    return b"\xff\xd8\xff\xe0" + os.urandom(2048) + b"\xff\xd9"


class Recorder:
    """Wraps the real enqueue (real broker, real registry) and remembers what was sent."""

    def __init__(self):
        from app.jobs.enqueue import enqueue

        self._enqueue = enqueue
        self.jobs = []

    def __call__(self, family, payload, **kw):
        job = self._enqueue(family, payload, **kw)
        self.jobs.append((payload, job))
        return job

    def paths(self):
        return [p["path"] for p, job in self.jobs if job.created]


@pytest.fixture
def watch(tmp_path, settings):
    watchers = []

    def start(observer="native", settle=0.3):
        root = tmp_path / "cameras"
        root.mkdir(exist_ok=True)
        s = replace(
            settings,
            camera_root=root,
            watcher_observer=observer,
            watcher_settle_seconds=settle,
            watcher_poll_interval=0.1,
        )
        rec = Recorder()
        w = FileWatcher(s, enqueue_fn=rec)
        stop = threading.Event()
        t = threading.Thread(target=w.run, args=(stop,), daemon=True)
        t.start()
        deadline = time.time() + 5
        while w.observer_type is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        watchers.append((stop, t))
        return w, rec, root

    yield start
    for stop, t in watchers:
        stop.set()
        t.join(5)


def _wait(cond, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_image_trailer_check(tmp_path):
    p = tmp_path / "x.jpg"
    JPEG = jpeg()
    p.write_bytes(JPEG[:-2])
    assert not image_complete(p)
    p.write_bytes(JPEG)
    assert image_complete(p)
    p.write_bytes(JPEG + b"\x00" * 16)
    assert image_complete(p)


def test_new_upload_becomes_a_detection_job(watch):
    w, rec, root = watch()
    assert w.observer_type == "native"
    cam = root / "Front Door"
    cam.mkdir()
    (cam / "a.jpg").write_bytes(jpeg())
    assert _wait(lambda: rec.paths())
    payload, job = rec.jobs[0]
    assert payload["camera_id"] == "front_door" and payload["path"] == str((cam / "a.jpg").resolve())
    assert len(payload["file_hash"]) == 64 and payload["seen_at"] <= time.time()
    record = get_registry().get(job.job_id)
    assert record["task"] == "vigil.detection.detect" and record["queue"] == "detection"
    with session_scope() as s:
        camera = s.execute(select(Camera).where(Camera.id == "front_door")).scalar_one()
        assert camera.name == "Front Door"


def test_half_written_file_waits_until_complete(watch):
    w, rec, root = watch(settle=0.3)
    cam = root / "yard"
    cam.mkdir()
    path = cam / "big.jpg"
    JPEG = jpeg()
    with open(path, "wb") as fh:
        fh.write(JPEG[:1000])
        fh.flush()
        time.sleep(1.0)  # stalled writer: size stable, but no JPEG end marker yet
        assert rec.paths() == []
        fh.write(JPEG[1000:])
    assert _wait(lambda: rec.paths() == [str(path.resolve())], 3)


def test_ignores_non_images_and_paths_outside_the_root(watch, tmp_path):
    w, rec, root = watch()
    cam = root / "porch"
    cam.mkdir()
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(jpeg())
    (cam / "notes.txt").write_text("hello")
    (cam / "clip.mp4").write_bytes(b"\x00" * 100)
    os.symlink(outside, cam / "link.jpg")
    (cam / "real.jpg").write_bytes(jpeg())
    assert _wait(lambda: rec.paths())
    time.sleep(0.5)
    assert rec.paths() == [str((cam / "real.jpg").resolve())]
    assert w.rejected == 1  # the link was refused without being opened


def test_duplicates_dropped_by_content(watch):
    w, rec, root = watch()
    cam = root / "gate"
    cam.mkdir()
    data = b"\xff\xd8" + os.urandom(512) + b"\xff\xd9"
    (cam / "one.jpg").write_bytes(data)
    assert _wait(lambda: len(rec.jobs) == 1)
    (cam / "two.jpg").write_bytes(data)
    # The content hash is the idempotency key; another path is another payload, so enqueue refuses it
    # (409 idempotency_conflict naming the first job) and the watcher counts it as a duplicate.
    assert _wait(lambda: w.duplicates == 1)
    assert len(rec.jobs) == 1


def test_polling_fallback(watch):
    w, rec, root = watch(observer="polling", settle=0.2)
    assert w.observer_type == "polling"
    cam = root / "garage"
    cam.mkdir()
    (cam / "p.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64) + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    assert _wait(lambda: rec.paths(), 5)

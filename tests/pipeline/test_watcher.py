"""The file watcher with a real observer, real Redis and real SQL: what it enqueues and what not, and
what it records (the upload record; tests/pipeline/test_uploads.py runs it in the service host)."""

import os
import threading
import time
import uuid

import pytest
from sqlalchemy import select

from app.core.db import session_scope
from app.core.settings import replace
from app.jobs.enqueue import Enqueued
from app.jobs.registry import get_registry
from app.models import Camera, Upload
from tests.helpers import unique_jpeg
from workers.host.services.watcher import FileWatcher, image_complete, incomplete_reason


def jpeg() -> bytes:
    """Fresh content each call (the watcher drops repeated content on purpose)."""
    return b"\xff\xd8\xff\xe0" + os.urandom(2048) + b"\xff\xd9"


class Recorder:
    """Wraps the real enqueue (real broker, real registry) and remembers what was sent."""

    def __init__(self):
        from app.jobs.enqueue import enqueue_many

        self._enqueue = enqueue_many
        self.jobs = []

    def __call__(self, requests, **kw):
        outcomes = self._enqueue(requests, **kw)
        self.jobs.extend((r.payload, job) for r, job in zip(requests, outcomes) if isinstance(job, Enqueued))
        return outcomes

    def paths(self):
        return [p["path"] for p, job in self.jobs if job.created]


@pytest.fixture
def watch(tmp_path, settings):
    watchers = []

    def start(observer="native", settle=0.3, cls=FileWatcher, **changes):
        root = changes.pop("camera_root", tmp_path / "cameras")
        root.mkdir(parents=True, exist_ok=True)
        s = replace(
            settings,
            camera_root=root,
            watcher_observer=observer,
            watcher_settle_seconds=settle,
            watcher_poll_interval=0.1,
            **changes,
        )
        rec = Recorder()
        w = cls(s, enqueue_fn=rec)
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
    p.write_bytes(JPEG[:-2])
    assert incomplete_reason(p).startswith("truncated JPEG: no end-of-image marker")
    p.write_bytes(b"GIF89a" + os.urandom(64))
    assert incomplete_reason(p) == "not a JPEG or PNG (no image signature)"


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


def test_duplicates_dropped_by_content(watch, settings, photos):
    # Under the session's camera root, with a real photograph: should the session's detection worker
    # run, it completes the first job (still a live one) instead of failing it for a path outside its root.
    w, rec, root = watch(camera_root=settings.camera_root)
    cam = root / f"gate_{uuid.uuid4().hex[:8]}"
    cam.mkdir()

    data = unique_jpeg(photos["coffee"])

    def mine():  # the start-up scan also enqueues what other tests left in the session's root
        return [job for payload, job in rec.jobs if payload["camera_id"] == cam.name]

    (cam / "one.jpg").write_bytes(data)
    assert _wait(lambda: len(mine()) == 1)
    (cam / "two.jpg").write_bytes(data)
    # The first upload's job still exists (waiting): the second is recorded as its duplicate, not enqueued.
    assert _wait(lambda: w.duplicates >= 1)
    assert len(mine()) == 1
    with session_scope(w.settings) as s:
        two = s.execute(select(Upload).where(Upload.path == str((cam / "two.jpg").resolve()))).scalar_one()
        assert two.outcome == "duplicate" and two.job_id == mine()[0].job_id


def test_a_truncated_jpeg_is_reported_skipped_after_settling(watch):
    w, rec, root = watch(settle=0.3)
    cam = root / "drive"
    cam.mkdir()
    data = jpeg()
    (cam / "cut.jpg").write_bytes(data[:1000])  # closed, but no end marker: it will not become whole
    assert _wait(lambda: w.skipped == 1, 3)
    assert rec.jobs == [] and w.status()["recent_skipped"][0]["reason"].startswith("truncated JPEG")
    with session_scope(w.settings) as s:
        row = s.execute(select(Upload).where(Upload.path == str((cam / "cut.jpg").resolve()))).scalar_one()
        assert row.outcome == "skipped" and row.camera_id == "drive" and "truncated JPEG" in row.reason
    (cam / "cut.jpg").write_bytes(data)  # written again, whole: a new upload, enqueued
    assert _wait(lambda: rec.paths() == [str((cam / "cut.jpg").resolve())], 3)


def test_a_frame_written_again_while_its_truncated_version_is_skipped_is_not_forgotten(watch):
    """A camera overwrites a frame just as the watcher records its truncated version as skipped: the
    new version is an upload of its own and is enqueued now, not left to the next reconcile scan
    (the watcher used to forget the path once the skip was recorded, whatever had happened to it)."""
    whole = jpeg()

    class Racing(FileWatcher):
        def _skip(self, path, reason):
            recorded = super()._skip(path, reason)
            if recorded:
                with open(path, "wb") as fh:
                    fh.write(whole)
                # the observer's thread reports the new version before this one forgets the path
                assert _wait(lambda: getattr(self._pending.get(path), "size", None) == len(whole), 3)
            return recorded

    w, rec, root = watch(settle=0.3, cls=Racing)
    cam = root / "drive"
    cam.mkdir()
    (cam / "cut.jpg").write_bytes(whole[:1000])
    assert _wait(lambda: rec.paths() == [str((cam / "cut.jpg").resolve())], 5)
    assert w.skipped == 1


def test_the_start_scan_enqueues_what_was_written_before_oldest_first_and_only_once(watch, tmp_path):
    from app.core.migrate import upgrade

    url = f"sqlite:///{tmp_path}/scan.db"
    upgrade(url)
    root = tmp_path / "cameras"
    for i, name in enumerate(("c.jpg", "a.jpg", "b.png")):
        path = root / "porch" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg())
        os.utime(path, (time.time() - 30 + i, time.time() - 30 + i))
    w, rec, root = watch(database_url=url)
    assert _wait(lambda: len(rec.paths()) == 3, 5)
    assert [os.path.basename(p) for p in rec.paths()] == ["c.jpg", "a.jpg", "b.png"]
    assert w.reconciled == 3 and w.last_scan["missed"] == 3
    assert w.reconcile() == 0  # everything is recorded now
    w2, rec2, _ = watch(database_url=url)  # a restart: nothing again
    time.sleep(0.5)
    assert rec2.jobs == [] and w2.last_scan["missed"] == 0 and w2.last_scan["files"] == 3

    # The camera deleted with its data (its upload rows go too): the folder's old files stay unread,
    # a file written after the delete is a new upload.
    from app.observability.audit import Audit
    from app.pipeline.cameras import delete_camera

    delete_camera(w2.settings, "porch", Audit(actor="test"), with_data=True)
    (root / "porch" / "d.jpg").write_bytes(jpeg())
    # (both watchers still run: the record makes their two sightings one upload, one job)
    assert _wait(lambda: rec.paths()[3:] + rec2.paths() == [str((root / "porch" / "d.jpg").resolve())], 5)
    assert w2.reconcile() == 0 and w2.last_scan["deleted_camera"] == 3


def test_polling_fallback(watch):
    w, rec, root = watch(observer="polling", settle=0.2)
    assert w.observer_type == "polling"
    cam = root / "garage"
    cam.mkdir()
    (cam / "p.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64) + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    assert _wait(lambda: rec.paths(), 5)

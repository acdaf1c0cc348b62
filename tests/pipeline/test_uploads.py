"""No upload left behind, with real parts on SQLite and PostgreSQL: the service host as the Procfile
runs it (`python -m workers.host`), a real Celery detection worker, real Redis. Files written while
the host is down are detected after it starts, exactly once each and oldest first; a truncated JPEG
is reported as skipped with its reason (upload row, heartbeat, GET /api/system/pipeline); a
re-upload after the earlier job was deleted is detected, while one whose earlier job still exists is
recorded as a duplicate."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from app.api.pipeline import PipelineStatus
from app.core.db import session_scope
from app.jobs.registry import JobRegistry
from app.models import Upload
from tests.helpers import API_KEY, worker_env
from tests.pipeline.resource_data import assert_shape, client_for
from tests.servers import ROOT, CeleryWorker

HEADERS = {"X-API-Key": API_KEY}


class Host:
    """The service host subprocess, started and stopped as supervisord would."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env, self.log_path, self.proc = env, log_path, None

    def start(self) -> Host:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "workers.host"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        assert self.proc.poll() is None, f"the host exited:\n{self.log_path.read_text()[-3000:]}"
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def rows(s) -> dict[str, Upload]:
    with session_scope(s) as session:
        return {Path(u.path).name: u for u in session.execute(select(Upload).order_by(Upload.id)).scalars()}


def pipeline(api, **expected):
    """GET /api/system/pipeline once the watcher's heartbeat shows `expected` (it is published every
    VIGIL_HEARTBEAT_INTERVAL)."""
    body = api.get("/api/system/pipeline").get_json()
    watcher = body["file_watcher"]
    return body if watcher["running"] and all(watcher.get(k) == v for k, v in expected.items()) else None


def written(path: Path, data: bytes, mtime: float) -> Path:
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


@pytest.mark.slow
def test_uploads_while_down_are_detected_once_skips_reported_and_reuploads_after_delete(
    db_url, redis_db, settings, photos, tmp_path, wait
):
    root, thumbs = tmp_path / "cameras", tmp_path / "thumbs"
    s = redis_db.settings(settings, database_url=db_url, camera_root=root, thumbnail_dir=thumbs, log_db=False)
    api = client_for(s)
    registry = JobRegistry(redis_db.client(decode_responses=True))
    env = worker_env(
        REDIS_URL=redis_db.url,
        DATABASE_URL=db_url,
        VIGIL_CAMERA_ROOT=str(root),
        VIGIL_THUMBNAIL_DIR=str(thumbs),
        VIGIL_VAR_DIR=str(tmp_path / "var"),
        VIGIL_LOG_DB="false",
        VIGIL_WATCHER_SETTLE_SECONDS="0.3",
    )
    worker = CeleryWorker(env, "detection_worker", ["detection:high", "detection"]).start(wait=False)
    host = Host(env, tmp_path / "host.log")
    try:
        # Written while nothing watches (before the first start): three photographs, oldest first by
        # mtime in another order than their names, and a JPEG cut short.
        yard = root / "yard"
        yard.mkdir(parents=True)
        now = time.time()
        written(yard / "b_astronaut.jpg", photos["astronaut"].read_bytes(), now - 40)
        written(yard / "a_coffee.jpg", photos["coffee"].read_bytes(), now - 30)
        written(yard / "c_flipped.jpg", photos["astronaut_flipped"].read_bytes(), now - 20)
        truncated = photos["coffee"].read_bytes()
        written(yard / "cut.jpg", truncated[: len(truncated) // 2], now - 35)
        worker.wait_ready(60)
        host.start()

        photographs = ("b_astronaut.jpg", "a_coffee.jpg", "c_flipped.jpg")

        def settled():
            host.alive()
            found = rows(s)
            return found if all(found.get(n) and found[n].outcome == "detected" for n in photographs) else None

        found = wait(settled, 60, interval=0.25, what="the uploads written while down detected")
        assert set(found) == {*photographs, "cut.jpg"}
        jobs = [registry.get(found[n].job_id) for n in photographs]
        assert all(
            j["state"] == "completed" and j["kwargs"]["path"] == found[n].path for j, n in zip(jobs, photographs)
        )
        # oldest first: the enqueue order (job creation) follows the files' mtimes
        assert [j["created_at"] for j in jobs] == sorted(j["created_at"] for j in jobs)
        assert jobs[0]["result"]["detections_kept"] >= 1  # the astronaut is a person
        total, _ = registry.list("detection", "completed")
        assert total == 3  # exactly once each

        cut = found["cut.jpg"]
        assert cut.outcome == "skipped" and cut.job_id is None and "truncated JPEG" in cut.reason
        body = wait(lambda: pipeline(api, reconciled=3), 5, what="the watcher's heartbeat")
        assert_shape(PipelineStatus, body)
        watcher = body["file_watcher"]
        assert watcher["running"] and watcher["skipped"] == 1
        assert (
            watcher["recent_skipped"][0]["path"] == cut.path
            and "truncated JPEG" in watcher["recent_skipped"][0]["reason"]
        )
        assert watcher["last_reconcile"]["missed"] == 4 and watcher["last_reconcile"]["files"] == 4

        # Down again. The astronaut's job is deleted; the same photograph is written again (a re-upload
        # after the delete: detected), and the coffee cup too (its job still exists: a duplicate).
        host.stop()
        r = api.delete(f"/api/v1/platform/system/jobs/{found['b_astronaut.jpg'].job_id}", headers=HEADERS)
        assert r.status_code == 200, r.get_json()
        shutil.copyfile(photos["astronaut"], yard / "d_again.jpg")
        shutil.copyfile(photos["coffee"], yard / "e_dup.jpg")
        host.start()

        def again():
            host.alive()
            found = rows(s)
            done = found.get("d_again.jpg") and found["d_again.jpg"].outcome == "detected" and found.get("e_dup.jpg")
            return found if done else None

        found = wait(again, 60, interval=0.25, what="the re-upload detected after a restart")
        dup = found["e_dup.jpg"]
        assert dup.outcome == "duplicate" and dup.job_id == found["a_coffee.jpg"].job_id
        assert f"upload {found['a_coffee.jpg'].id}" in dup.reason
        assert found["d_again.jpg"].job_id not in (None, found["b_astronaut.jpg"].job_id)
        assert len(found) == 6  # the files seen before the restart were not recorded or enqueued again
        total, _ = registry.list("detection", "completed")
        assert total == 3  # the deleted one is gone; the earlier two and the re-upload

        # Live, the same: once the re-upload's job is deleted too, a third copy is detected.
        assert (
            api.delete(f"/api/v1/platform/system/jobs/{found['d_again.jpg'].job_id}", headers=HEADERS).status_code
            == 200
        )
        shutil.copyfile(photos["astronaut"], yard / "f_live.jpg")

        def live():
            host.alive()
            upload = rows(s).get("f_live.jpg")
            return upload if upload and upload.outcome == "detected" else None

        upload = wait(live, 30, interval=0.25, what="a live re-upload after the delete detected")
        assert registry.get(upload.job_id)["result"]["detections_kept"] >= 1
        watcher = wait(lambda: pipeline(api, enqueued=2), 5, what="the watcher's heartbeat")["file_watcher"]
        assert (
            watcher["duplicates"] == 1 and watcher["reconciled"] == 1 and watcher["skipped"] == 0
        )  # the dup: not enqueued
    finally:
        host.stop()
        worker.stop()


def test_outcomes_follow_the_jobs_and_a_duplicate_needs_a_live_earlier_job(db_url, redis_db, settings):
    """uploads.sweep_outcomes and uploads.live_original against real registry records (Redis) and the
    real table, on both databases."""
    from datetime import UTC, datetime

    from app.jobs.registry import get_registry
    from app.pipeline import uploads
    from app.pipeline.cameras import ensure_camera

    s = redis_db.settings(settings, database_url=db_url, log_db=False)
    registry = get_registry(s)
    publish = ("publish", {"task": "vigil.detection.detect", "queue": "detection"})
    registry.apply_many("done", [publish, ("start", {}), ("success", registry.success_fields({"backend": "b"}))])
    registry.apply_many(
        "off", [publish, ("start", {}), ("success", registry.success_fields({"skipped": "camera disabled"}))]
    )
    registry.apply_many("broke", [publish, ("start", {}), ("failure", registry.failure_fields("boom", None))])
    registry.apply_many("waits", [publish])
    now = datetime.now(UTC)
    with session_scope(s) as session:
        ensure_camera(session, "cam", "cam", "/x/cam")
        ids = {}
        for job in ("done", "off", "broke", "waits", "gone"):
            row, created = uploads.claim(session, uploads.FileKey(f"/x/cam/{job}.jpg", 10, 1), "cam", now)
            assert created
            uploads.settle(session, row.id, "queued", job_id=job, file_hash=job.ljust(64, "0"))
            ids[job] = row.id
        again, created = uploads.claim(session, uploads.FileKey("/x/cam/done.jpg", 10, 1), "cam", now)
        assert not created and again.id == ids["done"] and again.job_id == "done"
    assert uploads.sweep_outcomes(s) == 4  # `waits` is still to run
    with session_scope(s) as session:
        got = {Path(u.path).stem: (u.outcome, u.reason) for u in session.execute(select(Upload)).scalars()}
        assert got == {
            "done": ("detected", None),
            "off": ("disabled", "camera disabled"),
            "broke": ("failed", "its job broke failed"),
            "waits": ("queued", None),
            "gone": ("failed", "its job gone was deleted before it finished"),
        }
        since = uploads.dedupe_since(s)
        # content duplicates: only of an upload whose job exists and has not failed
        assert uploads.live_original(s, session, "done".ljust(64, "0"), -1, since)[2:] == ("done", "completed")
        assert uploads.live_original(s, session, "waits".ljust(64, "0"), -1, since)[2:] == ("waits", "waiting")
        assert uploads.live_original(s, session, "broke".ljust(64, "0"), -1, since) is None
        assert uploads.live_original(s, session, "gone".ljust(64, "0"), -1, since) is None
        registry.forget("done")  # deleted: a re-upload of it is no duplicate any more
        assert uploads.live_original(s, session, "done".ljust(64, "0"), -1, since) is None


def test_the_batch_forms_claim_settle_and_find_originals_as_the_single_ones_do(db_url, redis_db, settings):
    """The watcher records a burst of uploads with uploads.claim_many, settle_many and
    live_originals (a few statements per round instead of several per file); they must give what
    claim, settle and live_original give one file at a time, on both databases."""
    from datetime import UTC, datetime

    from app.jobs.registry import get_registry
    from app.pipeline import uploads
    from app.pipeline.cameras import ensure_camera

    s = redis_db.settings(settings, database_url=db_url, log_db=False)
    registry = get_registry(s)
    publish = ("publish", {"task": "vigil.detection.detect", "queue": "detection"})
    registry.apply_many("j-live", [publish])
    registry.apply_many("j-broke", [publish, ("start", {}), ("failure", registry.failure_fields("boom", None))])
    now = datetime.now(UTC)
    keys = [uploads.FileKey(f"/x/cam/{n}.jpg", 100 + n, n) for n in range(1200)]  # past one LOOKUP_CHUNK
    with session_scope(s) as session:
        ensure_camera(session, "cam", "cam", "/x/cam")
        first, _ = uploads.claim(session, keys[7], "cam", now)
        claimed = uploads.claim_many(session, [(k, "cam") for k in keys], now)
        assert [created for _row, created in claimed] == [n != 7 for n in range(len(keys))]
        assert claimed[7][0].id == first.id
        assert len({row.id for row, _ in claimed}) == len(keys)
        assert all(row.outcome == "queued" and row.job_id is None and not row.settled for row, _ in claimed)
        ids = [row.id for row, _ in claimed]
        uploads.settle_many(
            session,
            [
                uploads.Settled(ids[0], "queued", "j-live", None, "a" * 64),
                uploads.Settled(ids[1], "queued", "j-broke", None, "b" * 64),
                uploads.Settled(ids[2], "queued", "j-live", None, "a" * 64),
            ],
        )
        # a later outcome without a job id or hash keeps the row's own
        uploads.settle_many(session, [uploads.Settled(ids[2], "duplicate", None, "same as 0", None)])
    with session_scope(s) as session:
        again = uploads.recorded(session, keys[:3])
        assert [(again[k].outcome, again[k].job_id) for k in keys[:3]] == [
            ("queued", "j-live"),
            ("queued", "j-broke"),
            ("duplicate", "j-live"),
        ]
        assert all(again[k].settled and again[k].first_seen_at is not None for k in keys[:3])
        row2 = session.get(Upload, ids[2])
        assert (row2.file_hash, row2.reason) == ("a" * 64, "same as 0")
        since = uploads.dedupe_since(s)
        found = uploads.live_originals(s, session, {"a" * 64: ids[5], "b" * 64: ids[6], "c" * 64: ids[8]}, since)
        # the live job's upload is an original; the failed job's and an unknown content are not
        assert found == {"a" * 64: (ids[0], keys[0].path, "j-live", "waiting")}
        assert found["a" * 64] == uploads.live_original(s, session, "a" * 64, ids[5], since)
        # an upload is never its own original
        assert uploads.live_originals(s, session, {"a" * 64: ids[0]}, since) == {}


def test_sqlite_statistics_are_taken_when_a_connection_closes(tmp_path):
    """app/core/db.py runs PRAGMA optimize on close (and hourly on check-in), so the listing indexes
    are planned with statistics (sqlite_stat1) rather than guesses."""
    from sqlalchemy import text

    from app.core.db import make_engine
    from app.core.migrate import upgrade

    url = f"sqlite:///{tmp_path}/stats.db"
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        conn.execute(
            text(
                "INSERT INTO cameras (id, name, folder_path, status, created_at, enabled) "
                "VALUES ('c', 'c', '/c', 'online', '2026-01-01', 1)"
            )
        )
        for i in range(50):
            conn.execute(
                text(
                    "INSERT INTO uploads (camera_id, path, size, mtime_ns, first_seen_at, outcome, updated_at) "
                    "VALUES ('c', :p, 1, 1, '2026-01-01', 'queued', '2026-01-01')"
                ),
                {"p": f"/c/{i}.jpg"},
            )
        conn.commit()
        assert conn.execute(text("SELECT count(*) FROM uploads WHERE outcome = 'queued'")).scalar() == 50
    engine.dispose()
    engine = make_engine(url)
    with engine.connect() as conn:
        stats = dict(conn.execute(text("SELECT idx, stat FROM sqlite_stat1 WHERE tbl = 'uploads'")).all())
    engine.dispose()
    assert stats["ix_uploads_outcome_seen"].startswith("50 ")

"""The file watcher: new camera uploads become detection jobs, and none is left behind.

* Watches the camera root recursively; the first folder under it is the camera (its name,
  normalised, is the camera id; the camera row is created on first sight).
* A file counts as complete when its writer closed it (inotify IN_CLOSE_WRITE) and its image
  trailer is present (JPEG EOI / PNG IEND), or, without a close event (polling, network shares),
  when its size and mtime stayed unchanged for `watcher_settle_seconds`. A half-written image is
  never enqueued; one that is still not a complete image once it has settled is reported instead
  (a warning, `skipped` in the heartbeat and GET /api/system/pipeline, an upload row with outcome
  `skipped` and the reason). Writing it again (new size or mtime) makes it a new upload.
* Only .jpg/.jpeg/.png; nothing that resolves outside the camera root (symlinks included) is read.
* Every accepted file is recorded in `uploads` (app/pipeline/uploads.py) before it is enqueued, and
  the enqueue's idempotency key is the file's (path, size, mtime), so the live observer and the
  reconcile scan seeing one file together, or a restart between the enqueue and the record's
  update, publish one job.
* A content duplicate (same SHA-256) is dropped only while an earlier upload of it, first seen within
  `watcher_dedup_seconds`, has a job that still exists and has not failed for good: a re-upload after
  that job was deleted (or failed, or revoked) is detected.
* Reconcile: at start and every `watcher_reconcile_seconds`, the camera root is walked (lstat only)
  and every image no upload row records, modified within `watcher_reconcile_max_age_seconds`, joins
  the pending files (oldest first), so files written while the watcher was down are detected once.
* Outcomes: every `OUTCOME_SWEEP_SECONDS`, queued uploads whose job finished become `detected`,
  `disabled` or `failed` (uploads.sweep_outcomes).
* Native observer (inotify) with a polling fallback; which one runs is reported as `observer_type`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from watchdog.events import FileClosedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from app.core.db import session_scope
from app.core.errors import Conflict
from app.core.settings import Settings
from app.core.time import iso_utc
from app.jobs.enqueue import (
    IMAGE_SUFFIXES,
    Enqueued,
    JobRequest,
    enqueue_many,
    normalize_camera_id,
    resolve_in_root,
)
from app.pipeline import uploads
from app.pipeline.cameras import ensure_camera
from app.pipeline.uploads import FileKey
from workers.host.service import Service, Throttle

log = logging.getLogger(__name__)

CHECK_INTERVAL = 0.05
OUTCOME_SWEEP_SECONDS = 2.0
RECONCILE_RETRY_SECONDS = 15.0  # a scan that failed (database away) is tried again this soon
RECENT_SKIPPED = 10  # skipped uploads the heartbeat shows
SUBMIT_CHUNK = 200  # complete files recorded and enqueued together (one transaction, one pipelined publish)
_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
_PNG_SIG, _PNG_IEND = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


def incomplete_reason(path: Path) -> str | None:
    """Why the file is not a complete image, or None when it carries its format's end marker (a
    writer that stopped mid-way has not written it yet). Trailing zero padding after a JPEG's EOI
    is tolerated."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    try:
        size = os.fstat(fd).st_size
        if size < 16:
            return f"too short to be an image ({size} bytes)"
        head = os.pread(fd, 8, 0)
        tail = os.pread(fd, 64, max(0, size - 64)).rstrip(b"\x00")
    finally:
        os.close(fd)
    if head.startswith(_JPEG_SOI):
        return None if tail.endswith(_JPEG_EOI) else f"truncated JPEG: no end-of-image marker (FF D9) in {size} bytes"
    if head.startswith(_PNG_SIG):
        return None if tail.endswith(_PNG_IEND) else f"truncated PNG: no IEND chunk in {size} bytes"
    return "not a JPEG or PNG (no image signature)"


def image_complete(path: Path) -> bool:
    return incomplete_reason(path) is None


def upload_key(key: FileKey) -> str:
    """The enqueue idempotency key of one file as stat() sees it: the scan and the observer, or a
    restart between the enqueue and the record's update, publish one job for it."""
    return "upload:" + hashlib.sha256(f"{key.path}\0{key.size}\0{key.mtime_ns}".encode()).hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class _Pending:
    size: int
    mtime: float
    first_seen: float
    changed_at: float
    closed: bool = False
    scanned: bool = False  # found by a reconcile scan, not by the observer


@dataclass
class _Ready:
    """A complete file on its way to a job."""

    path: str  # as the observer or the scan named it (the pending key)
    entry: _Pending
    real: Path
    camera_id: str
    folder: str
    key: FileKey
    digest: str


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: FileWatcher):
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("deleted", "opened", "closed_no_write"):
            return
        path = getattr(event, "dest_path", "") or event.src_path
        self.watcher.touch(os.fsdecode(path), closed=isinstance(event, FileClosedEvent))


class FileWatcher(Service):
    name = "file_watcher"

    def __init__(self, settings: Settings, enqueue_fn: Callable[..., Any] = enqueue_many):
        self.settings = settings
        self.enqueue = enqueue_fn
        self.root = Path(settings.camera_root)
        self.observer_type: str | None = None
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._known_cameras: dict[str, float] = {}
        self.enqueued = 0
        self.duplicates = 0
        self.skipped = 0
        self.reconciled = 0  # enqueued because a scan found them (written while nobody watched)
        self.scans = 0
        self.last_scan: dict[str, Any] | None = None
        self._recent_skipped: deque[dict[str, Any]] = deque(maxlen=RECENT_SKIPPED)
        self._rejected: set[str] = set()
        self._started_at = time.time()
        self._warn = Throttle(60.0)

    @property
    def rejected(self) -> int:
        """Distinct paths refused for resolving outside the camera root."""
        return len(self._rejected)

    # ---- service ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "camera_root": str(self.root),
            "observer_type": self.observer_type,
            "pending_tasks": len(self._pending),
            "enqueued": self.enqueued,
            "duplicates": self.duplicates,
            "skipped": self.skipped,
            "recent_skipped": self._recent(),
            "reconciled": self.reconciled,
            "last_reconcile": self.last_scan,
        }

    def _recent(self) -> list[dict[str, Any]]:
        with self._lock:  # the heartbeat thread reads what the watcher's thread appends
            return list(self._recent_skipped)

    def _start_observer(self):
        """A started observer and its type: native (inotify), or polling when asked or when native
        cannot start (no inotify, watch limit reached)."""
        handler = _Handler(self)

        def start(observer):
            observer.schedule(handler, str(self.root), recursive=True)
            observer.start()
            return observer

        polling = lambda: PollingObserver(timeout=self.settings.watcher_poll_interval)  # noqa: E731
        if self.settings.watcher_observer == "polling":
            return start(polling()), "polling"
        try:
            return start(Observer()), "native"
        except Exception:
            if self.settings.watcher_observer == "native":
                raise
            log.warning("native file observer unavailable; falling back to polling", exc_info=True)
            return start(polling()), "polling"

    def run(self, stop: threading.Event) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root = self.root.resolve()
        self._started_at = time.time()
        # The observer first, then the scan: a file written in between is seen by one or both, and
        # the upload record makes both sightings one upload.
        observer, self.observer_type = self._start_observer()
        log.info("watching %s (%s observer)", self.root, self.observer_type)
        next_scan = next_sweep = time.monotonic()
        try:
            while not stop.is_set():
                self._wake.wait(CHECK_INTERVAL)
                self._wake.clear()
                now = time.monotonic()
                if next_scan is not None and now >= next_scan:
                    every = self.settings.watcher_reconcile_seconds
                    try:
                        self.reconcile()
                        next_scan = now + every if every > 0 else None
                    except Exception:
                        self._warning("reconcile scan of %s failed; will retry", self.root)
                        next_scan = now + (
                            min(every, RECONCILE_RETRY_SECONDS) if every > 0 else RECONCILE_RETRY_SECONDS
                        )
                self.check_pending()
                if now >= next_sweep:
                    next_sweep = now + OUTCOME_SWEEP_SECONDS
                    try:
                        uploads.sweep_outcomes(self.settings)
                    except Exception:
                        self._warning("could not update upload outcomes; will retry")
                if not observer.is_alive():
                    raise RuntimeError("file observer thread stopped")
        finally:
            observer.stop()
            observer.join(timeout=5)

    def _warning(self, message: str, *args: Any) -> None:
        """A failure the loop outlives (Redis or the database away): logged at most once a minute."""
        if self._warn.ready():
            log.warning(message, *args, exc_info=True)

    # ---- events -> pending files -------------------------------------------------------------------
    def touch(self, path: str, closed: bool = False) -> None:
        if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
            return
        try:
            st = os.lstat(path)
        except OSError:
            return
        if stat.S_ISLNK(st.st_mode):
            # Never followed: a link inside the root points at a file the watcher sees anyway, and
            # one pointing outside must not be read at all.
            try:
                resolve_in_root(path, self.root)
            except ValueError:
                if path not in self._rejected:  # inotify may report a new link more than once
                    self._rejected.add(path)
                    log.warning("ignoring %s: symlink to outside the camera root", path)
            return
        if not stat.S_ISREG(st.st_mode):
            return
        now = time.time()
        with self._lock:
            entry = self._pending.get(path)
            if entry is None:
                entry = self._pending[path] = _Pending(st.st_size, st.st_mtime, now, now)
            elif (st.st_size, st.st_mtime) != (entry.size, entry.mtime):  # written again: complete once closed
                entry.size, entry.mtime, entry.changed_at, entry.closed = st.st_size, st.st_mtime, now, False
            entry.closed = entry.closed or closed
        if closed:
            self._wake.set()

    def check_pending(self) -> None:
        """Submit the files that are complete, report the ones that settled incomplete; oldest
        (by mtime) first, so a scan's backlog goes out in the order it was written."""
        now = time.time()
        with self._lock:
            items = sorted(self._pending.items(), key=lambda item: item[1].mtime)
        ready: list[tuple[str, _Pending]] = []
        seen: dict[str, tuple[int, float]] = {}  # (size, mtime) each decision was made on
        for path, entry in items:
            try:
                st = os.lstat(path)
            except OSError:
                self._drop(path)
                continue
            if (st.st_size, st.st_mtime) != (entry.size, entry.mtime):
                entry.size, entry.mtime, entry.changed_at, entry.closed = st.st_size, st.st_mtime, now, False
                continue
            settled = now - entry.changed_at >= self.settings.watcher_settle_seconds
            if not (entry.closed or settled):
                continue
            reason = incomplete_reason(Path(path))
            seen[path] = (entry.size, entry.mtime)
            if reason is None:
                ready.append((path, entry))
            elif settled:
                if self._skip(path, reason):
                    self._drop(path, seen[path])
            # else closed but incomplete: a writer may still append; wait for it to settle
        for start in range(0, len(ready), SUBMIT_CHUNK):
            for path in self._submit_many(ready[start : start + SUBMIT_CHUNK]):
                self._drop(path, seen.get(path))

    def _drop(self, path: str, seen: tuple[int, float] | None = None) -> None:
        """Forget a pending file, unless it changed since it was `seen` as (size, mtime): written again
        while this version was being recorded, it is a new upload, and forgetting it would leave it
        to the next reconcile scan, minutes away."""
        with self._lock:
            entry = self._pending.get(path)
            if entry is not None and (seen is None or (entry.size, entry.mtime) == seen):
                del self._pending[path]

    # ---- reconcile: the camera root against the upload record --------------------------------------
    def reconcile(self) -> int:
        """Walk the camera root (lstat only, links not followed) and add every image no upload row
        records to the pending files; returns how many were added. Files older than
        `watcher_reconcile_max_age_seconds` are left alone (counted as `older`); on an install
        upgraded from before the record (detections but no uploads), so are all files older than
        this watcher."""
        started = time.time()
        horizon = started - self.settings.watcher_reconcile_max_age_seconds
        with session_scope(self.settings) as session:
            if uploads.record_is_new(session):
                horizon = max(horizon, self._started_at)
        found: list[tuple[str, os.stat_result]] = []
        for dirpath, _dirs, files in os.walk(self.root):
            if Path(dirpath) == self.root:
                continue  # files go in a camera folder
            for name in files:
                if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                full = os.path.join(dirpath, name)
                try:
                    st = os.lstat(full)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    found.append((full, st))
        # Files older than the horizon are not even looked up: a camera root holding years of
        # pictures costs a walk, not a query per file.
        recent = [(full, st) for full, st in found if st.st_mtime >= horizon]
        keys = {full: FileKey(full, st.st_size, st.st_mtime_ns) for full, st in recent}
        with session_scope(self.settings) as session:
            known = uploads.recorded(session, keys.values())
            missed = [(full, st) for full, st in recent if not (keys[full] in known and known[keys[full]].settled)]
            # A camera deleted through the API (its rows with it) while its folder stays: what the
            # folder held then is not brought back; what came after the delete is an upload.
            camera_of = {full: normalize_camera_id(Path(full).relative_to(self.root).parts[0]) for full, _ in missed}
            deleted = uploads.cameras_deleted_at(session, set(camera_of.values()))
        gone = {full for full, st in missed if st.st_mtime < deleted.get(camera_of[full], float("-inf"))}
        missed = [(full, st) for full, st in missed if full not in gone]
        added = 0
        now = time.time()
        with self._lock:
            for full, st in sorted(missed, key=lambda f: f[1].st_mtime):
                if full in self._pending:
                    continue
                # Settled already unless it changed within the settle time (then the observer's rules apply).
                self._pending[full] = _Pending(st.st_size, st.st_mtime, now, min(now, st.st_mtime), scanned=True)
                added += 1
        self.scans += 1
        self.last_scan = {
            "at": iso_utc(started),
            "files": len(found),
            "missed": added,
            "older": len(found) - len(recent),
            "deleted_camera": len(gone),
            "seconds": round(time.time() - started, 3),
        }
        if added:
            log.info(
                "reconcile: %d of %d files in %s not recorded; queued oldest first (%d older than %s not looked at)",
                added,
                len(found),
                self.root,
                len(found) - len(recent),
                iso_utc(horizon),
            )
        if added:
            self._wake.set()
        return added

    # ---- pending file -> upload row -> detection job ------------------------------------------------
    def _place(self, path: str) -> tuple[Path, str, str] | None:
        """(real path, camera id, folder) of a file the watcher may read, or None (logged)."""
        try:
            real = resolve_in_root(path, self.root)
        except ValueError:
            self._rejected.add(path)
            log.warning("ignoring %s: it resolves outside the camera root", path)
            return None
        relative = real.relative_to(self.root)
        if len(relative.parts) < 2:
            log.info("ignoring %s: files go in a camera folder (<root>/<camera>/...)", real)
            return None
        return real, normalize_camera_id(relative.parts[0]), relative.parts[0]

    def _claim(self, real: Path, camera_id: str, folder: str, **fields: Any) -> tuple[uploads.Recorded, bool, FileKey]:
        st = os.stat(real)
        key = FileKey(str(real), st.st_size, st.st_mtime_ns)
        self._ensure_camera(camera_id, folder)
        try:
            with session_scope(self.settings) as session:
                return (*uploads.claim(session, key, camera_id, datetime.now(UTC), **fields), key)
        except Exception:
            self._known_cameras.pop(camera_id, None)  # deleted meanwhile? made again on the next try
            raise

    def _skip(self, path: str, reason: str) -> bool:
        """Report a file that settled without being a complete image. False keeps it pending."""
        placed = self._place(path)
        if placed is None:
            return True
        real, camera_id, folder = placed
        try:
            row, created, _key = self._claim(real, camera_id, folder, outcome="skipped", reason=reason)
        except FileNotFoundError:
            return True
        except Exception:
            self._warning("could not record skipped upload %s yet; will retry", real)
            return False
        if created:
            self.skipped += 1
            with self._lock:
                self._recent_skipped.appendleft(
                    {"path": str(real), "camera_id": camera_id, "reason": reason, "at": iso_utc(time.time())}
                )
            log.warning("skipped %s (upload %s): %s", real, row.id, reason)
        return True

    def _submit_many(self, items: list[tuple[str, _Pending]]) -> list[str]:
        """Record and enqueue complete files together; returns the paths that are done (the others stay
        pending: Redis or the database is away, or a file of the same content in this round goes first).

        Together because a burst of uploads is the normal case (a camera writes several frames a second,
        a restart finds hundreds): one transaction records them, one pipelined publish enqueues them, one
        transaction settles them, where one file at a time cost three transactions and a publish each,
        and CPU the detection pool needs on a small machine. The order of steps is the single file's: a
        file is recorded (committed) before its job is published, so a crash in between re-publishes it
        under the same idempotency key instead of losing it."""
        done: list[str] = []
        files: list[_Ready] = []
        for path, entry in items:
            placed = self._place(path)
            if placed is None:
                done.append(path)
                continue
            real, camera_id, folder = placed
            try:
                st = os.stat(real)
                digest = sha256_of(real)
            except FileNotFoundError:
                done.append(path)  # gone before it could be read
                continue
            except OSError:
                self._warning("could not read %s yet; will retry", real)
                continue
            files.append(
                _Ready(path, entry, real, camera_id, folder, FileKey(str(real), st.st_size, st.st_mtime_ns), digest)
            )
        if not files:
            return done
        to_send: list[tuple[_Ready, uploads.Recorded]] = []
        duplicates: list[tuple[_Ready, tuple[int, str, str, str]]] = []
        try:
            for f in files:
                self._ensure_camera(f.camera_id, f.folder)
            with session_scope(self.settings) as session:
                claimed = uploads.claim_many(session, [(f.key, f.camera_id) for f in files], datetime.now(UTC))
                fresh: dict[str, tuple[_Ready, uploads.Recorded]] = {}
                for f, (row, created) in zip(files, claimed):
                    if not created and row.settled:
                        done.append(f.path)  # recorded already: the scan and the observer saw it together, or a restart
                    elif f.digest not in fresh:  # else same content as a file of this round: decided next round
                        fresh[f.digest] = (f, row)
                since = uploads.dedupe_since(self.settings)
                earlier_of = uploads.live_originals(
                    self.settings, session, {digest: row.id for digest, (_f, row) in fresh.items()}, since
                )
                settled: list[uploads.Settled] = []
                for digest, (f, row) in fresh.items():
                    earlier = earlier_of.get(digest)
                    if earlier is None:
                        to_send.append((f, row))
                        continue
                    reason = f"same content as upload {earlier[0]} ({earlier[1]}), job {earlier[2]} {earlier[3]}"
                    settled.append(uploads.Settled(row.id, "duplicate", earlier[2], reason, digest))
                    duplicates.append((f, earlier))
                uploads.settle_many(session, settled)
        except Exception:
            for f in files:
                self._known_cameras.pop(f.camera_id, None)  # deleted meanwhile? made again on the next try
            self._warning("could not record %d upload(s) yet; will retry", len(files))
            return done
        for f, earlier in duplicates:
            self.duplicates += 1
            done.append(f.path)
            log.info("duplicate content %s (job %s); dropped", f.real, earlier[2])
        if not to_send:
            return done
        requests = [
            JobRequest(
                "detection",
                {
                    "camera_id": f.camera_id,
                    "path": str(f.real),
                    "file_hash": f.digest,
                    "seen_at": (row.first_seen_at or datetime.now(UTC)).timestamp(),
                },
                idempotency_key=upload_key(f.key),
            )
            for f, row in to_send
        ]
        try:
            outcomes = self.enqueue(requests, idempotency_ttl=self.settings.idempotency_ttl, settings=self.settings)
        except Exception:
            self._warning("could not enqueue %d upload(s) yet; will retry", len(requests))
            return done
        sent: list[tuple[_Ready, uploads.Recorded, Enqueued]] = []
        for (f, row), outcome in zip(to_send, outcomes):
            if isinstance(outcome, Conflict):
                # The key is this very file's (path, size, mtime): under another payload (another
                # seen_at: its row was recorded again, after a database reset) it still names this
                # file's job, which is then this upload's.
                job_id = (outcome.extra or {}).get("job_id")
                if outcome.code != "idempotency_conflict" or not job_id:
                    self._warning("could not enqueue %s yet (%s); will retry", f.real, outcome)
                    continue
                outcome = Enqueued(job_id, "", "", created=False)
            sent.append((f, row, outcome))
        try:
            with session_scope(self.settings) as session:
                uploads.settle_many(
                    session, [uploads.Settled(row.id, "queued", job.job_id, None, f.digest) for f, row, job in sent]
                )
        except Exception:
            self._warning("could not record %d enqueued upload(s) yet; will retry", len(sent))
            return done  # still pending: the next round finds their jobs under the same keys
        for f, _row, job in sent:
            done.append(f.path)
            if f.entry.scanned:
                self.reconciled += 1
            if job.created:
                self.enqueued += 1
                log.info(
                    "enqueued detection %s for %s%s", job.job_id, f.real, " (reconcile)" if f.entry.scanned else ""
                )
            else:
                log.info("upload %s already had job %s", f.real, job.job_id)
        return done

    def _ensure_camera(self, camera_id: str, folder: str) -> None:
        now = time.time()
        if now - self._known_cameras.get(camera_id, 0) < 60:
            return
        with session_scope(self.settings) as session:
            ensure_camera(session, camera_id, folder, str(self.root / folder))
        self._known_cameras[camera_id] = now

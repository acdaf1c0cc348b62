"""The file watcher: new camera uploads become detection jobs.

* Watches the camera root recursively; the first folder under it is the camera (its name,
  normalised, is the camera id; the camera row is created on first sight).
* A file counts as complete when its writer closed it (inotify IN_CLOSE_WRITE) and its image
  trailer is present (JPEG EOI / PNG IEND), or, without a close event (polling, network shares),
  when its size and mtime stayed unchanged for `watcher_settle_seconds`. A half-written image is
  never enqueued; one that stays truncated is enqueued after `INCOMPLETE_TIMEOUT` so the failure
  shows as a failed detection rather than vanishing.
* Only .jpg/.jpeg/.png; nothing that resolves outside the camera root (symlinks included) is read.
* Duplicates by content hash are dropped within `watcher_dedup_seconds` (the hash is the enqueue
  idempotency key, so a duplicate returns the first job instead of publishing another).
* Native observer (inotify) with a polling fallback; which one runs is reported as `observer_type`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import FileClosedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from app.core.db import session_scope
from app.core.errors import Conflict
from app.core.settings import Settings
from app.jobs.enqueue import IMAGE_SUFFIXES, enqueue, normalize_camera_id, resolve_in_root
from app.pipeline.cameras import ensure_camera
from workers.host.service import Service

log = logging.getLogger(__name__)

INCOMPLETE_TIMEOUT = 60.0
CHECK_INTERVAL = 0.05
_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
_PNG_SIG, _PNG_IEND = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


def image_complete(path: Path) -> bool:
    """True when the file carries its format's end marker (a writer that stopped mid-way has not
    written it yet). Trailing zero padding after a JPEG's EOI is tolerated."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return False
    try:
        size = os.fstat(fd).st_size
        if size < 16:
            return False
        head = os.pread(fd, 8, 0)
        tail = os.pread(fd, 64, max(0, size - 64)).rstrip(b"\x00")
    finally:
        os.close(fd)
    if head.startswith(_JPEG_SOI):
        return tail.endswith(_JPEG_EOI)
    if head.startswith(_PNG_SIG):
        return tail.endswith(_PNG_IEND)
    return False


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

    def __init__(self, settings: Settings, enqueue_fn: Callable[..., Any] = enqueue):
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
        self._rejected: set[str] = set()

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
        }

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
        observer, self.observer_type = self._start_observer()
        log.info("watching %s (%s observer)", self.root, self.observer_type)
        try:
            while not stop.is_set():
                self._wake.wait(CHECK_INTERVAL)
                self._wake.clear()
                self.check_pending()
                if not observer.is_alive():
                    raise RuntimeError("file observer thread stopped")
        finally:
            observer.stop()
            observer.join(timeout=5)

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
            elif (st.st_size, st.st_mtime) != (entry.size, entry.mtime):
                entry.size, entry.mtime, entry.changed_at = st.st_size, st.st_mtime, now
            entry.closed = entry.closed or closed
        if closed:
            self._wake.set()

    def check_pending(self) -> None:
        now = time.time()
        with self._lock:
            items = list(self._pending.items())
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
            if image_complete(Path(path)) or now - entry.first_seen >= INCOMPLETE_TIMEOUT:
                if self._submit(path, entry):
                    self._drop(path)

    def _drop(self, path: str) -> None:
        with self._lock:
            self._pending.pop(path, None)

    # ---- pending file -> detection job --------------------------------------------------------------
    def _submit(self, path: str, entry: _Pending) -> bool:
        """Enqueue one complete file. False keeps it pending (Redis or the database is away)."""
        try:
            real = resolve_in_root(path, self.root)
        except ValueError:
            self._rejected.add(path)
            log.warning("ignoring %s: it resolves outside the camera root", path)
            return True
        relative = real.relative_to(self.root)
        if len(relative.parts) < 2:
            log.info("ignoring %s: files go in a camera folder (<root>/<camera>/...)", real)
            return True
        folder = relative.parts[0]
        camera_id = normalize_camera_id(folder)
        seen_at = time.time()
        try:
            digest = sha256_of(real)
            self._ensure_camera(camera_id, folder)
            job = self.enqueue(
                "detection",
                {"camera_id": camera_id, "path": str(real), "file_hash": digest, "seen_at": seen_at},
                idempotency_key=f"watch:{digest}",
                idempotency_ttl=self.settings.watcher_dedup_seconds,
                settings=self.settings,
            )
        except Conflict as exc:  # the same content under another path or time: the key names the earlier job
            if exc.code != "idempotency_conflict":
                raise
            self.duplicates += 1
            log.info("duplicate content %s (job %s); dropped", real, (exc.extra or {}).get("job_id"))
            return True
        except Exception:
            log.warning("could not enqueue %s yet; will retry", real, exc_info=True)
            return False
        if job.created:
            self.enqueued += 1
            log.info("enqueued detection %s for %s", job.job_id, real)
        else:
            self.duplicates += 1
            log.info("duplicate content %s (job %s); dropped", real, job.job_id)
        return True

    def _ensure_camera(self, camera_id: str, folder: str) -> None:
        now = time.time()
        if now - self._known_cameras.get(camera_id, 0) < 60:
            return
        with session_scope(self.settings) as session:
            ensure_camera(session, camera_id, folder, str(self.root / folder))
        self._known_cameras[camera_id] = now

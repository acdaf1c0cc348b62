"""Files and space: orphaned files (thumbnails and clips no row references) and the storage
figures of the cleanup and storage endpoints. Apart from retention cleanup (`app/ops/cleanup.py`)
because it reads the file system, not rows past a cutoff; it shares that module's lock, so an
orphan sweep never races a retention run.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.errors import Conflict
from app.core.settings import Settings
from app.core.time import iso_now
from app.models import Base, Detection, Event, GpuStat, Log
from app.ops.cleanup import CleanupLock

log = logging.getLogger(__name__)

ORPHAN_MAX_FRACTION = 0.5  # refuse to delete more than this share of a directory without force
ORPHAN_FILES_LISTED = 100


# ---- orphaned files ------------------------------------------------------------------------------------------
def _reference_columns(kind: str) -> list[Any]:
    """Columns that reference files of a directory: thumbnails from detections; clips from any
    `clip_path` column a model defines (none yet, in which case clips are never deleted)."""

    if kind == "thumbnails":
        return [Detection.thumbnail_path]
    columns = []
    for mapper in Base.registry.mappers:
        table = mapper.local_table
        if "clip_path" in table.c:
            columns.append(table.c.clip_path)
    return columns


def _relative_key(stored: str, roots: tuple[str, ...]) -> str | None:
    base = roots[0]
    path = os.path.normpath(stored if os.path.isabs(stored) else os.path.join(base, stored))
    for root in roots:
        if path.startswith(root + os.sep):
            return os.path.relpath(path, root)
    return None


def _walk(root: Path) -> list[tuple[str, int, float]]:
    """(relative path, size, mtime) of every regular file under root; symlinks are not followed."""
    out = []
    for dirpath, _dirs, files in os.walk(root, followlinks=False):
        for name in files:
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if os.path.isfile(full) and not os.path.islink(full):
                out.append((os.path.relpath(full, root), st.st_size, st.st_mtime))
    return out


def orphaned_files(
    settings: Settings,
    session_factory: Callable[[], Session],
    *,
    dry_run: bool = True,
    force: bool = False,
    client: redis.Redis | None = None,
) -> dict[str, Any]:
    """Find files no row references in the thumbnail and clip directories; delete them unless
    `dry_run`. Refuses (409) to delete more than half a directory's files without `force`: that
    usually means a wrong directory setting or a restored database, not garbage."""
    now = time.time()
    plan: dict[str, dict[str, Any]] = {}
    candidates: dict[str, list[tuple[str, int]]] = {}
    for kind, configured in (("thumbnails", settings.thumbnail_dir), ("clips", settings.clips_dir)):
        root = Path(configured).resolve()
        columns = _reference_columns(kind)
        files = _walk(root) if root.is_dir() else []
        roots = (str(root), os.path.normpath(str(configured)))
        referenced: set[str] = set()
        with session_factory() as session:
            for column in columns:
                for (value,) in session.execute(select(column).where(column.isnot(None))).yield_per(5000):
                    key = _relative_key(value, roots)
                    if key is not None:
                        referenced.add(key)
        orphans = [
            (rel, size)
            for rel, size, mtime in files
            if rel not in referenced and now - mtime >= settings.orphan_min_age_seconds
        ]
        candidates[kind] = orphans
        too_many = len(orphans) > ORPHAN_MAX_FRACTION * len(files) and bool(orphans)
        entry: dict[str, Any] = {
            "orphaned_count": len(orphans),
            "orphaned_size_bytes": sum(size for _, size in orphans),
            "files": sorted(rel for rel, _ in orphans)[:ORPHAN_FILES_LISTED],
            "total_files": len(files),
            "directory": str(root),
            "deleted_count": 0,
            "requires_force": too_many,
        }
        if not columns:
            entry["skipped"] = "no table references these files, so none can be called orphaned"
            entry["requires_force"] = False
        plan[kind] = entry
    if not dry_run:
        refused = [k for k, e in plan.items() if e["requires_force"] and not e.get("skipped")]
        if refused and not force:
            raise Conflict(
                "Refusing to delete more than half of the files in "
                + ", ".join(f"{k} ({plan[k]['orphaned_count']} of {plan[k]['total_files']})" for k in refused)
                + "; check the directory settings, or pass force=true",
                extra={k: plan[k] for k in refused},
            )
        lock = CleanupLock(client, {"job_id": None, "kind": "orphaned-files"}) if client is not None else None
        if lock is not None:
            lock.__enter__()
        try:
            for kind, entry in plan.items():
                if entry.get("skipped"):
                    continue
                root = Path(entry["directory"])
                for rel, _size in candidates[kind]:
                    try:
                        os.unlink(root / rel)
                        entry["deleted_count"] += 1
                    except FileNotFoundError:
                        continue
                    except OSError:
                        log.warning("could not delete orphaned file %s", root / rel, exc_info=True)
        finally:
            if lock is not None:
                lock.release()
    counted = [e for e in plan.values() if not e.get("skipped")]
    return {
        **plan,
        "total_orphaned_files": sum(e["orphaned_count"] for e in counted),
        "total_size_bytes": sum(e["orphaned_size_bytes"] for e in counted),
        "dry_run": dry_run,
        "timestamp": iso_now(),
    }


# ---- storage ----------------------------------------------------------------------------------------------------
def directory_usage(path: Path) -> dict[str, Any]:
    files = _walk(Path(path)) if Path(path).is_dir() else []
    return {"file_count": len(files), "size_bytes": sum(size for _, size, _ in files), "path": str(path)}


def storage_stats(settings: Settings, session: Session) -> dict[str, Any]:

    anchor = next((p for p in (settings.var_dir, settings.camera_root, Path("/")) if Path(p).exists()), Path("/"))
    disk = psutil.disk_usage(str(anchor))

    def count(model: Any) -> int:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())

    return {
        "disk_used_bytes": disk.used,
        "disk_total_bytes": disk.total,
        "disk_free_bytes": disk.free,
        "disk_usage_percent": round(disk.percent, 1),
        "thumbnails": directory_usage(settings.thumbnail_dir),
        "images": directory_usage(settings.camera_root),
        "clips": directory_usage(settings.clips_dir),
        "events_count": count(Event),
        "detections_count": count(Detection),
        "gpu_stats_count": count(GpuStat),
        "logs_count": count(Log),
        "disk_path": str(anchor),
        "timestamp": iso_now(),
    }

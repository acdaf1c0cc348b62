"""The upload record, SQL side ("no upload left behind"): what the file watcher accepted and what
became of it (the design is in app/models/upload.py's docstring).

The watcher (workers/host/services/watcher.py) is the only writer (deleting a camera with its
data deletes its rows), and it runs in one thread, `sweep_outcomes` included, so the checks here
(is this file recorded, is that content's earlier job alive) and the writes that follow them need no
locking of their own; the unique `(path, size, mtime_ns)` constraint still makes recording
idempotent against a second host watching the same root.

Why the outcome is settled by a sweep rather than by the detection task: the task knows its job id,
not its upload, and `uploads` has no index on `job_id`; the sweep reads the few `queued` rows through
`ix_uploads_outcome_seen` and their jobs' states from the registry in one Redis pipeline, off every
task's hot path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, exists, func, select, update
from sqlalchemy.orm import Session

from app.core.db import session_scope, upsert_insert
from app.core.settings import Settings
from app.jobs.registry import JOB_KEY, get_registry
from app.models import AuditLog, Detection, Job, Upload

LIVE_JOB_STATES = frozenset({"waiting", "active", "completed"})  # failed or revoked: "failed for good"
LOOKUP_CHUNK = 500  # paths per `IN (...)` when a scan asks which files are recorded
SWEEP_LIMIT = 500  # queued uploads looked at per sweep, oldest first


@dataclass(frozen=True)
class FileKey:
    """What identifies a file on disk without reading it (see Upload)."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Recorded:
    id: int
    outcome: str
    job_id: str | None
    first_seen_at: datetime | None = None

    @property
    def settled(self) -> bool:
        """False for a row whose enqueue never completed (the watcher stopped in between): its file
        must go through the enqueue again, under the same idempotency key."""
        return not (self.outcome == "queued" and self.job_id is None)


def claim(
    session: Session,
    key: FileKey,
    camera_id: str,
    seen_at: datetime,
    *,
    outcome: str = "queued",
    reason: str | None = None,
    file_hash: str | None = None,
) -> tuple[Recorded, bool]:
    """Record a file (or find its row): (the row, whether this call created it). Safe when the scan
    and the live observer, or two hosts, record the same file together."""
    return claim_many(session, [(key, camera_id)], seen_at, outcome=outcome, reason=reason, file_hash=file_hash)[0]


def claim_many(
    session: Session,
    files: Sequence[tuple[FileKey, str]],
    seen_at: datetime,
    *,
    outcome: str = "queued",
    reason: str | None = None,
    file_hash: str | None = None,
) -> list[tuple[Recorded, bool]]:
    """`claim` for many (file, camera id) pairs in two statements per LOOKUP_CHUNK files: one
    multi-row insert that skips the files recorded already, one read of their rows. A burst of
    uploads is the watcher's normal case, and a statement per file cost more CPU than the enqueue
    (CPU the detection pool needs on a small machine)."""
    if not files:
        return []
    created: set[FileKey] = set()
    for start in range(0, len(files), LOOKUP_CHUNK):
        chunk = files[start : start + LOOKUP_CHUNK]
        rows = session.execute(
            upsert_insert(session)(_UPLOADS)
            .values(
                [
                    {
                        "camera_id": camera_id,
                        "path": key.path,
                        "size": key.size,
                        "mtime_ns": key.mtime_ns,
                        "file_hash": file_hash,
                        "first_seen_at": seen_at,
                        "outcome": outcome,
                        "reason": reason,
                        "updated_at": seen_at,
                    }
                    for key, camera_id in chunk
                ]
            )
            .on_conflict_do_nothing(index_elements=["path", "size", "mtime_ns"])
            .returning(_UPLOADS.c.path, _UPLOADS.c.size, _UPLOADS.c.mtime_ns)
        )
        created.update(FileKey(*row) for row in rows)
    known = recorded(session, [key for key, _camera in files])
    return [(known[key], key in created) for key, _camera in files]


def settle(
    session: Session,
    upload_id: int,
    outcome: str,
    *,
    job_id: str | None = None,
    reason: str | None = None,
    file_hash: str | None = None,
) -> None:
    """Give a row its outcome; a `job_id` or `file_hash` of None leaves the row's own."""
    settle_many(session, [Settled(upload_id, outcome, job_id, reason, file_hash)])


@dataclass(frozen=True)
class Settled:
    """One row's outcome for `settle_many`; a `job_id` or `file_hash` of None leaves the row's own."""

    upload_id: int
    outcome: str
    job_id: str | None = None
    reason: str | None = None
    file_hash: str | None = None


def settle_many(session: Session, rows: Iterable[Settled]) -> None:
    """`settle` for many rows: one statement with a parameter set per row."""
    now = datetime.now(UTC)
    params = [
        {
            "upload_id": r.upload_id,
            "new_outcome": r.outcome,
            "new_reason": r.reason,
            "new_job_id": r.job_id,
            "new_hash": r.file_hash,
            "now": now,
        }
        for r in rows
    ]
    if params:
        session.connection().execute(_SETTLE_ANY, params)


def recorded(session: Session, keys: Iterable[FileKey]) -> dict[FileKey, Recorded]:
    """The rows of those files that have one, read through the unique index (path first)."""
    by_path: dict[str, list[FileKey]] = {}
    for key in keys:
        by_path.setdefault(key.path, []).append(key)
    wanted = set().union(*by_path.values()) if by_path else set()
    paths = list(by_path)
    out: dict[FileKey, Recorded] = {}
    for start in range(0, len(paths), LOOKUP_CHUNK):
        rows = session.execute(
            select(
                Upload.id,
                Upload.path,
                Upload.size,
                Upload.mtime_ns,
                Upload.outcome,
                Upload.job_id,
                Upload.first_seen_at,
            ).where(Upload.path.in_(paths[start : start + LOOKUP_CHUNK]))
        )
        for row in rows:
            key = FileKey(row.path, row.size, row.mtime_ns)
            if key in wanted:
                out[key] = Recorded(row.id, row.outcome, row.job_id, row.first_seen_at)
    return out


def job_states(settings: Settings, job_ids: list[str]) -> dict[str, tuple[str, Any]]:
    """(state, result) of each job that still exists: the registry's live index, then SQL history
    for those that left it. A job in neither was deleted (DELETE /jobs/{id} purges both)."""
    out: dict[str, tuple[str, Any]] = {}
    if not job_ids:
        return out
    registry = get_registry(settings)
    with registry.r.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(JOB_KEY + job_id, "state")
        states = pipe.execute()
        # Results only where a completed job's result decides the outcome: a sweep after a burst
        # asks about hundreds of jobs, most still waiting, every few seconds.
        completed = [j for j, state in zip(job_ids, states) if state == "completed"]
        for job_id in completed:
            pipe.hget(JOB_KEY + job_id, "result")
        results = dict(zip(completed, pipe.execute())) if completed else {}
    for job_id, state in zip(job_ids, states):
        if state:
            out[job_id] = (state, results.get(job_id))
    missing = [j for j in job_ids if j not in out]
    if missing:
        with session_scope(settings) as session:
            for job_id, state, result in session.execute(
                select(Job.id, Job.state, Job.result).where(Job.id.in_(missing))
            ):
                out[job_id] = (state, result)
    return out


def live_original(
    settings: Settings, session: Session, file_hash: str, upload_id: int, since: datetime
) -> tuple[int, str, str, str] | None:
    """The earlier upload of the same content whose job still exists and has not failed for good,
    first seen since `since` (the dedupe window): (upload id, path, job id, job state), or None.
    A re-upload after that job was deleted, failed or revoked is therefore detected again."""
    return live_originals(settings, session, {file_hash: upload_id}, since).get(file_hash)


def live_originals(
    settings: Settings, session: Session, uploads_by_hash: dict[str, int], since: datetime, per_hash: int = 10
) -> dict[str, tuple[int, str, str, str]]:
    """`live_original` for many contents ({file hash: the new upload's id}) in one query and one
    registry pipeline: {file hash: (upload id, path, job id, job state)} for those that have one.
    The newest `per_hash` earlier uploads of each content are looked at."""
    if not uploads_by_hash:
        return {}
    candidates: dict[str, list[Row]] = {}
    hashes = sorted(uploads_by_hash)
    for start in range(0, len(hashes), LOOKUP_CHUNK):
        rows = session.execute(
            select(Upload.id, Upload.path, Upload.job_id, Upload.file_hash)
            .where(
                Upload.file_hash.in_(hashes[start : start + LOOKUP_CHUNK]),
                Upload.outcome.in_(("queued", "detected", "disabled")),
                Upload.job_id.is_not(None),
                Upload.first_seen_at >= since,
            )
            .order_by(Upload.first_seen_at.desc())
        )
        for row in rows:
            mine = candidates.setdefault(row.file_hash, [])
            if row.id != uploads_by_hash[row.file_hash] and len(mine) < per_hash:
                mine.append(row)
    if not candidates:
        return {}
    states = job_states(settings, [r.job_id for rows in candidates.values() for r in rows])
    out: dict[str, tuple[int, str, str, str]] = {}
    for file_hash, rows in candidates.items():
        for row in rows:
            state = states.get(row.job_id, (None, None))[0]
            if state in LIVE_JOB_STATES:
                out[file_hash] = (row.id, row.path, row.job_id, state)
                break
    return out


def dedupe_since(settings: Settings) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=settings.watcher_dedup_seconds)


def _finished(state: str | None, result: Any, job_id: str) -> tuple[str, str | None] | None:
    """A queued upload's outcome from its job's state and result, or None while the job is to run."""
    if state is None:
        return "failed", f"its job {job_id} was deleted before it finished"
    if state == "completed":
        if isinstance(result, str):  # the registry keeps results as JSON text; SQL history decoded
            try:
                result = json.loads(result)
            except ValueError:
                result = None
        skipped = result.get("skipped") if isinstance(result, dict) else None
        return ("disabled", skipped) if skipped == "camera disabled" else ("detected", None)
    if state in ("failed", "revoked"):
        return "failed", f"its job {job_id} {state}"
    return None


def sweep_outcomes(settings: Settings, limit: int = SWEEP_LIMIT) -> int:
    """Move `queued` uploads whose job finished to `detected` (`disabled` when its camera was off) or
    `failed`; returns how many moved. A failed job retried through the operations API comes back as
    `waiting`, but its upload stays `failed`: the job's own record is the one to follow then."""
    with session_scope(settings) as session:
        rows = session.execute(
            select(Upload.id, Upload.job_id)
            .where(Upload.outcome == "queued", Upload.job_id.is_not(None))
            .order_by(Upload.first_seen_at)
            .limit(limit)
        ).all()
    if not rows:
        return 0
    states = job_states(settings, [r.job_id for r in rows])
    moved = []
    now = datetime.now(UTC)
    for row in rows:
        state, result = states.get(row.job_id, (None, None))
        done = _finished(state, result, row.job_id)
        if done is not None:
            moved.append({"upload_id": row.id, "new_outcome": done[0], "new_reason": done[1], "now": now})
    if moved:  # one statement with many parameter sets: a sweep after a burst moves hundreds
        with session_scope(settings) as session:
            session.connection().execute(_SETTLE, moved)
    return len(moved)


_UPLOADS = Upload.__table__
_SETTLE = (
    update(_UPLOADS)
    .where(_UPLOADS.c.id == bindparam("upload_id"), _UPLOADS.c.outcome == "queued")
    .values(outcome=bindparam("new_outcome"), reason=bindparam("new_reason"), updated_at=bindparam("now"))
)
_SETTLE_ANY = (  # any row, whatever its outcome; job id and hash kept where the new one is None
    update(_UPLOADS)
    .where(_UPLOADS.c.id == bindparam("upload_id"))
    .values(
        outcome=bindparam("new_outcome"),
        reason=bindparam("new_reason"),
        job_id=func.coalesce(bindparam("new_job_id", type_=_UPLOADS.c.job_id.type), _UPLOADS.c.job_id),
        file_hash=func.coalesce(bindparam("new_hash", type_=_UPLOADS.c.file_hash.type), _UPLOADS.c.file_hash),
        updated_at=bindparam("now"),
    )
)


def cameras_deleted_at(session: Session, camera_ids: set[str]) -> dict[str, float]:
    """When each of these cameras was last deleted through the API (epoch seconds, from the audit
    log's `camera_deleted` entries), for those that were."""
    if not camera_ids:
        return {}
    rows = session.execute(
        select(AuditLog.resource_id, func.max(AuditLog.timestamp))
        .where(AuditLog.action == "camera_deleted", AuditLog.resource_id.in_(sorted(camera_ids)))
        .group_by(AuditLog.resource_id)
    )
    return {camera_id: at.timestamp() for camera_id, at in rows if at is not None}


def record_is_new(session: Session) -> bool:
    """True on an install that has detections but no upload record yet (upgraded from before the
    record existed): its camera root's files were detected then, and a first scan must not send
    them all through detection (and alerting) again."""
    has_uploads = session.execute(select(exists().where(Upload.id.is_not(None)))).scalar()
    if has_uploads:
        return False
    return bool(session.execute(select(exists().where(Detection.id.is_not(None)))).scalar())

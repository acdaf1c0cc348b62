"""Per-minute, per-hour and per-day rollups of every agent's finished jobs, kept as jobs finish.

The registry archiver (workers/host/services/registry_archiver.py) hands each batch of finished jobs
to `record_jobs` inside the transaction that writes them to `jobs`, before the upsert: a job already
archived with the same outcome (a crash between the SQL commit and the Redis trim re-sends it) is
not counted twice. Reads then sum a few dozen rows (24 hour rows for a day, 168 for a week) however
many jobs the history holds: the P9 goal of p99 < 50 ms over a million jobs.

Latency is the job's run time (started -> finished), kept as a fixed histogram whose bucket bounds
are `BOUNDS`; percentiles are interpolated inside the bucket they fall in (and capped by the
largest latency seen), so they are estimates with the histogram's resolution.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from app.core.db import upsert_insert
from app.models import Job, MonitoringRollup
from app.models.monitoring import HISTOGRAM_BUCKETS

MINUTE, HOUR, DAY = 60, 3600, 86400
SPANS = (MINUTE, HOUR, DAY)
# Upper bounds (ms) of the latency histogram's buckets; the last bucket is everything above.
BOUNDS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
assert len(BOUNDS) + 1 == HISTOGRAM_BUCKETS
ERROR_TYPES = ("timeout", "rate_limit", "model_error", "rejected", "other")
ADDITIVE = (
    "requests",
    "successes",
    "failures",
    "latency_sum_ms",
    "input_tokens",
    "output_tokens",
    *(f"err_{t}" for t in ERROR_TYPES),
    *(f"h{i}" for i in range(HISTOGRAM_BUCKETS)),
)

# Which agent a job belongs to: the queue it ran on (docs/api.md, "AI monitoring API").
AGENT_OF_QUEUE = {"detection:high": "agent_detector", "detection": "agent_detector", "analysis": "agent_analyser"}

_SUMMED_NAMES = ADDITIVE

_STATUS = re.compile(r"\b(?:HTTP |status |answered )?([45]\d\d)\b")


def error_type(message: str | None) -> str:
    """A failed job's class, from its error text: timeout, rate_limit (429), model_error (5xx, the
    service unavailable), rejected (4xx, refused input) or other."""
    text = (message or "").lower()
    if "timeout" in text or "timed out" in text or "timelimitexceeded" in text:
        return "timeout"
    if "429" in text or "rate limit" in text or "too many requests" in text:
        return "rate_limit"
    match = _STATUS.search(text)
    if match and match.group(1).startswith("5"):
        return "model_error"
    if match and match.group(1).startswith("4"):
        return "rejected"
    if "unavailable" in text:
        return "model_error"
    if "rejected" in text or "unreadable" in text or "refused" in text:
        return "rejected"
    return "other"


def bucket_of(latency_ms: float) -> int:
    for i, bound in enumerate(BOUNDS):
        if latency_ms <= bound:
            return i
    return len(BOUNDS)


def model_of(job: dict[str, Any]) -> str:
    """The model a job used, from its result: the analysis task names its analyser (`llm:<model>`
    or `builtin`); detection jobs name none."""
    result = job.get("result")
    if isinstance(result, dict) and isinstance(result.get("analyser"), str):
        name = result["analyser"]
        return (name.split(":", 1)[1] if name.startswith("llm:") else name)[:128]
    return ""


def _tokens(result: Any, key: str) -> int:
    value = result.get(key) if isinstance(result, dict) else None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else 0


def _epoch(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


@dataclass
class Counts:
    """Additive counters of one rollup cell (or of a sum of them)."""

    requests: int = 0
    successes: int = 0
    failures: int = 0
    latency_sum_ms: float = 0.0
    latency_max_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_TYPES, 0))
    hist: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_BUCKETS)

    def add_job(self, ok: bool, latency_ms: float, error: str | None, input_tokens: int, output_tokens: int) -> None:
        self.requests += 1
        if ok:
            self.successes += 1
        else:
            self.failures += 1
            self.errors[error_type(error)] += 1
        self.latency_sum_ms += latency_ms
        self.latency_max_ms = max(self.latency_max_ms, latency_ms)
        self.hist[bucket_of(latency_ms)] += 1
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens

    def add(self, other: Counts | MonitoringRollup) -> None:
        if isinstance(other, Counts):
            errors, hist = other.errors, other.hist
        else:
            errors = {t: getattr(other, f"err_{t}") or 0 for t in ERROR_TYPES}
            hist = [getattr(other, f"h{i}") or 0 for i in range(HISTOGRAM_BUCKETS)]
        self.requests += other.requests or 0
        self.successes += other.successes or 0
        self.failures += other.failures or 0
        self.latency_sum_ms += other.latency_sum_ms or 0.0
        self.latency_max_ms = max(self.latency_max_ms, other.latency_max_ms or 0.0)
        self.input_tokens += other.input_tokens or 0
        self.output_tokens += other.output_tokens or 0
        for t in ERROR_TYPES:
            self.errors[t] += errors[t]
        for i in range(HISTOGRAM_BUCKETS):
            self.hist[i] += hist[i]

    @classmethod
    def from_sums(cls, values: Any) -> Counts:
        """From `aggregate`'s columns: the sums of ADDITIVE in order, then the max latency."""
        v = dict(zip(_SUMMED_NAMES, values))
        return cls(
            requests=int(v["requests"] or 0),
            successes=int(v["successes"] or 0),
            failures=int(v["failures"] or 0),
            latency_sum_ms=float(v["latency_sum_ms"] or 0.0),
            latency_max_ms=float(values[-1] or 0.0),
            input_tokens=int(v["input_tokens"] or 0),
            output_tokens=int(v["output_tokens"] or 0),
            errors={t: int(v[f"err_{t}"] or 0) for t in ERROR_TYPES},
            hist=[int(v[f"h{i}"] or 0) for i in range(HISTOGRAM_BUCKETS)],
        )

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requests": self.requests,
            "successes": self.successes,
            "failures": self.failures,
            "latency_sum_ms": self.latency_sum_ms,
            "latency_max_ms": self.latency_max_ms,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }
        out.update({f"err_{t}": n for t, n in self.errors.items()})
        out.update({f"h{i}": n for i, n in enumerate(self.hist)})
        return out

    @property
    def avg_ms(self) -> float:
        return round(self.latency_sum_ms / self.requests, 2) if self.requests else 0.0

    @property
    def success_rate(self) -> float:
        return round(100.0 * self.successes / self.requests, 2) if self.requests else 100.0

    @property
    def error_rate(self) -> float:
        return round(100.0 * self.failures / self.requests, 2) if self.requests else 0.0

    def percentile(self, p: float) -> float:
        """The p-th percentile (0-100) of latency, interpolated inside its histogram bucket."""
        total = sum(self.hist)
        if not total:
            return 0.0
        rank = p / 100.0 * total
        seen = 0
        for i, n in enumerate(self.hist):
            if n and seen + n >= rank:
                low = 0.0 if i == 0 else float(BOUNDS[i - 1])
                high = float(BOUNDS[i]) if i < len(BOUNDS) else max(self.latency_max_ms, low)
                value = low + (high - low) * max(0.0, rank - seen) / n
                return round(min(value, self.latency_max_ms) if self.latency_max_ms else value, 2)
            seen += n
        return round(self.latency_max_ms, 2)


# ---- writing ----------------------------------------------------------------------------------------------
def cells_for(jobs: Iterable[dict[str, Any]]) -> dict[tuple[int, int, str, str], Counts]:
    """The rollup increments of finished jobs (registry records), by (span, bucket, agent, model)."""
    cells: dict[tuple[int, int, str, str], Counts] = {}
    for job in jobs:
        agent = AGENT_OF_QUEUE.get(job.get("queue") or "")
        state = job.get("state")
        finished = _epoch(job.get("finished_at"))
        if agent is None or state not in ("completed", "failed") or finished is None:
            continue
        started = _epoch(job.get("started_at"))
        latency = max(0.0, (finished - started) * 1000) if started is not None else 0.0
        result = job.get("result")
        model = model_of(job)
        for span in SPANS:
            key = (span, int(finished // span) * span, agent, model)
            cell = cells.get(key)
            if cell is None:
                cell = cells[key] = Counts()
            cell.add_job(
                state == "completed",
                latency,
                job.get("error"),
                _tokens(result, "input_tokens"),
                _tokens(result, "output_tokens"),
            )
    return cells


def upsert_cells(session: Session, cells: dict[tuple[int, int, str, str], Counts]) -> None:
    """Add the increments to the rollup rows, creating the missing ones, on PostgreSQL and SQLite."""
    if not cells:
        return
    rows = [
        {"span": span, "bucket": bucket, "agent_id": agent, "model": model, **counts.row()}
        for (span, bucket, agent, model), counts in cells.items()
    ]
    session.execute(_upsert(session.get_bind().dialect.name), rows)


@cache
def _upsert(dialect: str) -> Any:
    """One INSERT ... ON CONFLICT per dialect, executed with many parameter sets (compiled once and
    cached; a multi-row VALUES of another length each flush was compiled every time)."""
    table = MonitoringRollup.__table__
    base = upsert_insert(dialect)(table)
    updates: dict[str, Any] = {c: table.c[c] + base.excluded[c] for c in ADDITIVE}
    updates["latency_max_ms"] = case(
        (base.excluded.latency_max_ms > table.c.latency_max_ms, base.excluded.latency_max_ms),
        else_=table.c.latency_max_ms,
    )
    return base.on_conflict_do_update(index_elements=["span", "bucket", "agent_id", "model"], set_=updates)


def record_jobs(session: Session, jobs: list[dict[str, Any]]) -> int:
    """Count a batch of finished jobs into the rollups, in the caller's transaction; returns how many
    were counted. Called before the batch is upserted into `jobs`, so a job whose row already holds
    the same outcome and finish time was counted by an earlier flush and is skipped."""
    relevant = [j for j in jobs if j.get("queue") in AGENT_OF_QUEUE and j.get("state") in ("completed", "failed")]
    if not relevant:
        return 0
    seen: dict[str, tuple[str, float | None]] = {}
    ids = [j["id"] for j in relevant]
    for start in range(0, len(ids), 500):
        for job_id, state, finished_at in session.execute(
            select(Job.id, Job.state, Job.finished_at).where(Job.id.in_(ids[start : start + 500]))
        ):
            seen[job_id] = (state, _epoch(finished_at))
    fresh = []
    for job in relevant:
        before = seen.get(job["id"])
        finished = _epoch(job.get("finished_at"))
        if before and before[0] == job["state"] and before[1] is not None and finished is not None:
            if abs(before[1] - finished) < 0.001:
                continue
        fresh.append(job)
    upsert_cells(session, cells_for(fresh))
    return len(fresh)


# ---- reading ----------------------------------------------------------------------------------------------
def window(span: int, seconds: float, now: float | None = None) -> tuple[int, int]:
    """The buckets of `span` that cover the last `seconds`: [first bucket start, end)."""
    now = time.time() if now is None else now
    end = int(now // span) * span + span
    start = int((now - seconds) // span) * span
    return start, end


def read(
    session: Session, span: int, start: int, end: int, agent_ids: Iterable[str] | None = None
) -> list[MonitoringRollup]:
    stmt = select(MonitoringRollup).where(
        MonitoringRollup.span == span, MonitoringRollup.bucket >= start, MonitoringRollup.bucket < end
    )
    if agent_ids is not None:
        stmt = stmt.where(MonitoringRollup.agent_id.in_(list(agent_ids)))
    return list(session.execute(stmt).scalars())


_SUMMED = [c for c in ADDITIVE]


def aggregate(
    session: Session, span: int, start: int, end: int, key: str | None, agent_ids: Iterable[str] | None = None
) -> dict[Any, Counts]:
    """The rollup cells of a window summed by `key` (`bucket`, `agent_id`, `model`, or None for one
    total under the key None), in SQL: a week of hour rows is one grouped scan of the primary key's range."""
    table = MonitoringRollup.__table__
    columns = [func.sum(table.c[c]) for c in _SUMMED] + [func.max(table.c.latency_max_ms)]
    group = [table.c[key]] if key else []
    stmt = select(*group, *columns).where(table.c.span == span, table.c.bucket >= start, table.c.bucket < end)
    if agent_ids is not None:
        stmt = stmt.where(table.c.agent_id.in_(list(agent_ids)))
    if key:
        stmt = stmt.group_by(table.c[key])
    out: dict[Any, Counts] = {}
    for row in session.execute(stmt):
        values = row[1:] if key else row
        if values[0] is None:  # no rows at all (an aggregate without GROUP BY still answers one)
            continue
        out[row[0] if key else None] = Counts.from_sums(values)
    return out


def total(rows: Iterable[MonitoringRollup | Counts]) -> Counts:
    out = Counts()
    for row in rows:
        out.add(row)
    return out


def by_key(rows: Iterable[MonitoringRollup], key: str) -> dict[Any, Counts]:
    out: dict[Any, Counts] = {}
    for row in rows:
        out.setdefault(getattr(row, key), Counts()).add(row)
    return out

"""Anomaly detection against each camera's own activity baseline (System Operations API
"Anomaly Detection Configuration").

What is normal differs by camera and by hour: a busy street at 08:00 on a Monday is not a quiet
back yard at 03:00 on a Sunday. So each camera keeps, per hour of the week (168 slots, site time,
`VIGIL_SITE_TIMEZONE`), a baseline of two activity metrics:

* `detections_per_batch`: the detections in the event's batch;
* `events_per_hour`: the camera's events started in the hour up to this one, this one included.

Each baseline is an exponentially weighted mean and variance with weight `decay_factor` per new
event (West's incremental form: `d = x - mean; mean += a*d; var = (1-a) * (var + a*d*d)`), the first
event of a slot starting it at (x, 0). A slot not updated for `window_days` (event time) starts over,
so a camera moved or re-aimed stops being judged against what it used to see.

An event is judged against its slot's baseline *before* the event is added to it. Once the slot has
`min_samples` events, each metric's deviation is `|x - mean| / max(stdev, MIN_STDEV)` and the event's
`anomaly_score` is the larger of the two; above `threshold_stdev` it `is_anomaly`. `MIN_STDEV` (half
an event or detection) keeps a perfectly steady baseline (variance 0) from calling a deviation of
one detection infinitely unusual: the metrics are counts. Below `min_samples` the score is null and
nothing is flagged.

The judgement feeds the analyser (`BatchFacts.anomaly`: the LLM's prompt names it, the rule scorer
adds points for it), is stored on the event (`anomaly_score`, `is_anomaly`), and alert rules with
`anomaly_only` match only flagged events. The baselines live in SQL (`anomaly_baselines`) and are
updated in the transaction that writes the event, so a retried analysis, which finds its event,
never counts twice.

`threshold_stdev` and `min_samples` can be changed at run time (PATCH /api/system/anomaly-config,
audited, stored in `runtime_config` like the other runtime settings) and are read fresh for every
event, so a change applies to the next event without a restart. `decay_factor` and `window_days`
shape the stored baselines themselves and are set by the environment only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.db import session_scope
from app.core.errors import checked
from app.core.settings import Settings
from app.models import AnomalyBaseline, Event, RuntimeConfig
from app.observability import audit
from app.observability.audit import Audit
from app.pipeline import runtime_config

METRICS = ("detections_per_batch", "events_per_hour")
MIN_STDEV = 0.5
RUNTIME_KEYS = {"threshold_stdev": "anomaly_threshold_stdev", "min_samples": "anomaly_min_samples"}
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _no_null_defaults(schema: dict[str, Any]) -> None:
    for prop in schema.get("properties", {}).values():
        if "default" in prop and prop["default"] is None:
            del prop["default"]


class AnomalyConfigUpdate(BaseModel):
    """PATCH /api/system/anomaly-config: `threshold_stdev` and `min_samples` only. `decay_factor` and
    `window_days` are refused (422 naming them): they shape the stored baselines, so changing them
    at run time would silently mix two definitions of "normal"."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_null_defaults)

    threshold_stdev: float = Field(
        None, gt=0, le=100, strict=True, description="Standard deviations from the baseline that make an anomaly"
    )
    min_samples: int = Field(
        None, ge=1, le=100_000, strict=True, description="Events a slot must have seen before its events are judged"
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("null is not a value; leave the field out instead")
        return value


def _stored(session: Session) -> dict[str, Any]:
    rows = session.execute(select(RuntimeConfig).where(RuntimeConfig.key.in_(list(RUNTIME_KEYS.values()))))
    return {row.key: row.value for row in rows.scalars()}


def config(settings: Settings, session: Session | None = None) -> dict[str, Any]:
    """The configuration in force, read fresh (two rows): stored run-time values over the environment's."""
    if session is None:
        with session_scope(settings) as own:
            return config(settings, own)
    stored = _stored(session)
    threshold = stored.get(RUNTIME_KEYS["threshold_stdev"])
    samples = stored.get(RUNTIME_KEYS["min_samples"])
    return {
        "threshold_stdev": float(threshold) if threshold is not None else float(settings.anomaly_threshold_stdev),
        "min_samples": int(samples) if samples is not None else int(settings.anomaly_min_samples),
        "decay_factor": float(settings.anomaly_decay_factor),
        "window_days": int(settings.anomaly_window_days),
    }


def update_config(settings: Settings, values: AnomalyConfigUpdate | dict[str, Any], who: Audit) -> dict[str, Any]:
    """Store the changed values; one `settings_changed` audit entry (resource `anomaly_config`) names
    each old and new value, and a request that changes nothing writes none."""
    clean = checked(AnomalyConfigUpdate, values).model_dump(exclude_unset=True)
    with session_scope(settings) as session:
        before = config(settings, session)
        diff = {k: {"old": before[k], "new": v} for k, v in clean.items() if before[k] != v}
        for key, change in diff.items():
            row = session.get(RuntimeConfig, RUNTIME_KEYS[key])
            if row is None:
                session.add(RuntimeConfig(key=RUNTIME_KEYS[key], value=change["new"], updated_by=who.actor))
            else:
                row.value, row.updated_by = change["new"], who.actor
        if diff:
            session.add(audit.entry("settings_changed", "anomaly_config", "anomaly_config", who, {"changes": diff}))
    runtime_config.invalidate()
    return config(settings)


# ---- judging and learning -------------------------------------------------------------------------------------
def slot_of(at: datetime, zone: ZoneInfo) -> int:
    """Hour of the week in site time: Monday 00:00-00:59 is 0, Sunday 23:00-23:59 is 167."""
    local = at.astimezone(zone)
    return local.weekday() * 24 + local.hour


def deviation(value: float, mean: float, variance: float) -> float:
    return abs(value - mean) / max(math.sqrt(max(variance, 0.0)), MIN_STDEV)


def ewma(mean: float, variance: float, value: float, decay: float) -> tuple[float, float]:
    """The baseline after one more sample (see the module docstring)."""
    diff = value - mean
    return mean + decay * diff, (1 - decay) * (variance + decay * diff * diff)


@dataclass
class Assessment:
    camera_id: str
    at: datetime
    slot: int
    values: dict[str, float]
    config: dict[str, Any]
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> mean, stdev, samples
    scores: dict[str, float] = field(default_factory=dict)
    anomaly_score: float | None = None
    is_anomaly: bool = False
    samples: int = 0
    rows_existed: bool = False  # every metric's row was there when judged: `learn` only updates

    def context(self) -> dict[str, Any]:
        """What the analyser is told (BatchFacts.anomaly)."""
        day, hour = DAYS[self.slot // 24], self.slot % 24
        return {
            "slot": f"{day} {hour:02d}:00-{hour:02d}:59",
            "values": dict(self.values),
            "baselines": {k: dict(v) for k, v in self.baselines.items()},
            "samples": self.samples,
            "min_samples": self.config["min_samples"],
            "threshold_stdev": self.config["threshold_stdev"],
            "anomaly_score": self.anomaly_score,
            "is_anomaly": self.is_anomaly,
        }


def _events_in_hour(session: Session, camera_id: str, at: datetime) -> int:
    """The camera's events started in the hour before `at` (the index `(camera_id, started_at)`)."""
    return session.execute(
        select(func.count())
        .select_from(Event)
        .where(Event.camera_id == camera_id, Event.started_at >= at - timedelta(hours=1), Event.started_at < at)
    ).scalar_one()


def _fresh(row: AnomalyBaseline | None, at: datetime, window_days: int) -> bool:
    return row is not None and row.samples > 0 and at - row.updated_at <= timedelta(days=window_days)


def assess(settings: Settings, camera_id: str, at: datetime, detection_count: int) -> Assessment:
    """Judge one event (its batch's camera, start time and detection count) against its slot's
    baseline, with the configuration in force now. Reads only; `learn` adds the event afterwards."""
    zone = ZoneInfo(settings.site_timezone)
    slot = slot_of(at, zone)
    with session_scope(settings) as session:
        cfg = config(settings, session)
        values = {
            "detections_per_batch": float(detection_count),
            "events_per_hour": float(_events_in_hour(session, camera_id, at) + 1),
        }
        rows = {
            r.metric: r
            for r in session.execute(
                select(AnomalyBaseline).where(AnomalyBaseline.camera_id == camera_id, AnomalyBaseline.slot == slot)
            ).scalars()
        }
    out = Assessment(camera_id, at, slot, values, cfg, rows_existed=all(m in rows for m in METRICS))
    fresh = {m: rows[m] for m in METRICS if _fresh(rows.get(m), at, cfg["window_days"])}
    out.samples = min((fresh[m].samples for m in METRICS), default=0) if len(fresh) == len(METRICS) else 0
    for metric, row in fresh.items():
        out.baselines[metric] = {
            "mean": round(row.mean, 4),
            "stdev": round(math.sqrt(max(row.variance, 0.0)), 4),
            "samples": row.samples,
        }
    if out.samples >= cfg["min_samples"]:
        out.scores = {m: deviation(values[m], fresh[m].mean, fresh[m].variance) for m in METRICS}
        out.anomaly_score = round(max(out.scores.values()), 4)
        out.is_anomaly = out.anomaly_score > cfg["threshold_stdev"]
    return out


def learn(session: Session, assessment: Assessment) -> None:
    """Add the assessed event to its slot's baselines, in the caller's transaction (the event's), with
    the rows locked (PostgreSQL) so two analyses of one camera cannot lose an update. A first row
    that a concurrent analysis inserted meanwhile is retried as an update (in a savepoint, taken only
    when the slot had no rows when the event was judged)."""
    if assessment.rows_existed:
        _learn(session, assessment)
        return
    for attempt in range(2):
        try:
            with session.begin_nested():
                _learn(session, assessment)
            return
        except IntegrityError:
            if attempt:
                raise


def _learn(session: Session, a: Assessment) -> None:
    decay, window = a.config["decay_factor"], a.config["window_days"]
    rows = {
        r.metric: r
        for r in session.execute(
            select(AnomalyBaseline)
            .where(AnomalyBaseline.camera_id == a.camera_id, AnomalyBaseline.slot == a.slot)
            .with_for_update()
        ).scalars()
    }
    for metric in METRICS:
        value, row = a.values[metric], rows.get(metric)
        if row is None:
            session.add(
                AnomalyBaseline(
                    camera_id=a.camera_id,
                    slot=a.slot,
                    metric=metric,
                    mean=value,
                    variance=0.0,
                    samples=1,
                    updated_at=a.at,
                )
            )
        elif not _fresh(row, a.at, window):
            row.mean, row.variance, row.samples, row.updated_at = value, 0.0, 1, a.at
        else:
            row.mean, row.variance = ewma(row.mean, row.variance, value, decay)
            row.samples += 1
            row.updated_at = max(row.updated_at, a.at)
    session.flush()


def describe(context: dict[str, Any] | None) -> str | None:
    """One line for an analyser's prompt or reasoning."""
    if not context:
        return None
    values = context["values"]
    seen = f"{values['detections_per_batch']:g} detections, {values['events_per_hour']:g} events this hour"
    if context["anomaly_score"] is None:
        return (
            f"Activity baseline ({context['slot']}): {seen}; still learning "
            f"({context['samples']} of {context['min_samples']} events seen)"
        )
    base = context["baselines"]
    usual = ", ".join(f"{m.replace('_', ' ')} usually {b['mean']:g} ± {b['stdev']:g}" for m, b in base.items())
    verdict = "ANOMALOUS" if context["is_anomaly"] else "normal"
    return (
        f"Activity baseline ({context['slot']}): {seen} ({usual}); deviation "
        f"{context['anomaly_score']:.2f} standard deviations, threshold {context['threshold_stdev']:g}: {verdict}"
    )

"""Model zoo and anomaly detection on the hot paths.

1. `usage record`: what a detection pays to record its models' use (`app/pipeline/ai/usage.py`: the
   built-in detector's two models, counters + latency sample + pid, one pipelined round trip), against
   one pipeline stage sample (`app/pipeline/telemetry.py:record`, a write every detection already
   makes three times), same Redis, same process.
2. `anomaly judge + learn`: what an analysis pays to judge its event against the camera's baseline
   and add it (`anomaly.assess` before the analyser, `anomaly.learn` in the event's transaction), on
   SQLite with 20 000 events of the camera already stored, against writing the event alone (the
   insert transaction every analysis makes). The ratio says what the baseline adds to the SQL work
   of an analysis.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from bench.harness import Context, Result, summary_ms, time_calls


def _usage(ctx: Context, quick: bool) -> Result:
    from app.core.settings import Settings
    from app.pipeline import telemetry
    from app.pipeline.ai import usage

    settings = Settings.from_env(ctx.env())
    n = 500 if quick else 5000
    timings = {"opencv-hog-people": 38.0, "opencv-haar-frontalface": 34.0}
    rec = time_calls(lambda: usage.record(settings, timings, backend="builtin"), n, warmup=50)
    base = time_calls(lambda: telemetry.record(settings, "detect", 72.0), n, warmup=50)
    got, want = summary_ms(rec), summary_ms(base)
    counted = usage.usage(settings, list(timings))["opencv-hog-people"]["inference_count"]
    assert counted == n + 50, counted
    return Result(
        "P16",
        "usage record per detection (2 models), p95",
        got["p95_ms"],
        "ms",
        baseline="one pipeline stage sample, same Redis",
        baseline_value=want["p95_ms"],
        ratio=round(got["p95_ms"] / want["p95_ms"], 3) if want["p95_ms"] else None,
        goal="p95 < 1 ms (a built-in detection takes ~85 ms)",
        met=got["p95_ms"] < 1.0,
        details={"usage_record": got, "stage_sample": want},
    )


def _anomaly(ctx: Context, quick: bool) -> Result:
    from sqlalchemy import insert

    from app.core.db import session_scope
    from app.core.settings import Settings
    from app.models import Camera, Event
    from app.pipeline import anomaly

    env = ctx.env()
    ctx.migrate(env)
    settings = Settings.from_env(env)
    t0 = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
    stored = 2000 if quick else 20_000
    with session_scope(settings) as session:
        session.add(Camera(id="bench_cam", name="Bench", folder_path="/bench"))
        session.flush()
        session.execute(
            insert(Event),
            [
                {
                    "batch_id": uuid.uuid4().hex,
                    "camera_id": "bench_cam",
                    "started_at": t0 + timedelta(minutes=7 * i),
                    "ended_at": t0 + timedelta(minutes=7 * i, seconds=5),
                    "risk_score": 20,
                    "risk_level": "low",
                    "summary": "",
                    "reasoning": "",
                    "detection_ids": [],
                    "detection_count": 2,
                    "analyser": "builtin",
                    "reviewed": False,
                    "is_anomaly": False,
                }
                for i in range(stored)
            ],
        )
    clock = {"at": t0 + timedelta(minutes=7 * stored)}

    def event() -> Event:
        clock["at"] += timedelta(minutes=7)
        at = clock["at"]
        return Event(
            batch_id=uuid.uuid4().hex,
            camera_id="bench_cam",
            started_at=at,
            ended_at=at + timedelta(seconds=5),
            risk_score=20,
            risk_level="low",
            detection_count=3,
            analyser="builtin",
        )

    def plain() -> None:
        with session_scope(settings) as session:
            session.add(event())

    def judged() -> None:
        ev = event()
        verdict = anomaly.assess(settings, "bench_cam", ev.started_at, ev.detection_count)
        ev.anomaly_score, ev.is_anomaly = verdict.anomaly_score, verdict.is_anomaly
        with session_scope(settings) as session:
            session.add(ev)
            session.flush()
            anomaly.learn(session, verdict)

    n = 200 if quick else 1000
    base = summary_ms(time_calls(plain, n, warmup=20))
    got = summary_ms(time_calls(judged, n, warmup=20))
    extra = round(got["p50_ms"] - base["p50_ms"], 3)
    return Result(
        "P16",
        "event write with anomaly judge + learn, p50 (SQLite)",
        got["p50_ms"],
        "ms",
        baseline="the event write alone, same database",
        baseline_value=base["p50_ms"],
        ratio=round(got["p50_ms"] / base["p50_ms"], 3) if base["p50_ms"] else None,
        goal="adds < 20 ms p50 per analysis (one analysis per batch; an LLM call takes seconds)",
        met=extra < 20.0,
        details={"with_anomaly": got, "event_only": base, "added_p50_ms": extra, "events_stored": stored},
    )


def run(ctx: Context, quick: bool = False) -> list[Result]:
    return [_usage(ctx, quick), _anomaly(ctx, quick)]

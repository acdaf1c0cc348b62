"""Observability on the hot path: log records into the database sink, job metrics per task.

1. `log emit`: time to log one INFO record through a logger that has Vigil's console handler
   (writing to /dev/null) *and* the database sink writing to SQLite in the background, against
   the same logger with the console handler only (what every process paid before the sink). The
   ratio says what the sink adds on the calling thread; the rows are then checked in the table.
2. `job metrics`: the per-task cost of the metrics receivers (`task_prerun` + `task_postrun` in
   `workers/hooks/observability.py`, multiprocess mmap writes), called with a real task and request,
   against one `time.perf_counter()` pair (the floor any duration measurement pays). Reported in
   microseconds, to set against a task's own cost (a Celery no-op task costs around a millisecond
   of broker round trips).
"""

from __future__ import annotations

import logging
import os
import time

from bench.harness import Context, Result

RECORDS = 20_000


def _time_logging(logger: logging.Logger, n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        logger.info("detected %d objects on %s", i, "front_door", extra={"duration_ms": 1.5})
    return time.perf_counter() - started


def _log_emit(ctx: Context, n: int) -> Result:
    env = ctx.env()
    os.environ.update({k: v for k, v in env.items() if k in ("VIGIL_VAR_DIR", "DATABASE_URL", "REDIS_URL")})
    ctx.migrate(env)
    from app.observability.log_sink import DatabaseLogHandler
    from app.observability.logging_setup import FORMAT, ContextFilter

    devnull = open(os.devnull, "w")
    console = logging.StreamHandler(devnull)
    console.addFilter(ContextFilter("bench"))
    console.setFormatter(logging.Formatter(FORMAT))

    base = logging.getLogger("bench.p6.console")
    base.propagate, base.level = False, logging.INFO
    base.addHandler(console)
    sink = DatabaseLogHandler(env["DATABASE_URL"], component="bench", capacity=n * 2, flush_interval=0.2)
    both = logging.getLogger("bench.p6.sink")
    both.propagate, both.level = False, logging.INFO
    both.addHandler(console)
    both.addHandler(sink)

    _time_logging(base, 500)
    _time_logging(both, 500)
    assert sink.flush(timeout=60)
    rounds = 3
    base_s = min(_time_logging(base, n) for _ in range(rounds))
    sink_s = min(_time_logging(both, n) for _ in range(rounds))
    assert sink.flush(timeout=120)
    written = sink.written
    sink.close()
    devnull.close()
    per_base, per_sink = base_s / n * 1e6, sink_s / n * 1e6
    return Result(
        "P7",
        "log record emit, console + DB sink",
        round(per_sink, 2),
        "us/record",
        baseline="console handler only",
        baseline_value=round(per_base, 2),
        ratio=round(per_sink / per_base, 3),
        goal="informative (no goal set)",
        details={
            "records_per_round": n,
            "rounds": rounds,
            "rows_written": written,
            "sink_only_us": round(per_sink - per_base, 2),
        },
    )


def _job_metrics(n: int) -> Result:
    from workers.hooks import observability
    from workers.tasks.system import canary as task

    task.push_request(id="bench", delivery_info={"routing_key": "analysis"})
    try:
        started = time.perf_counter()
        for i in range(n):
            observability._prerun(task_id=f"t{i}", task=task, kwargs={"camera_id": "front_door"})
            observability._postrun(task_id=f"t{i}", task=task, state="SUCCESS")
        cost = (time.perf_counter() - started) / n
        started = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            time.perf_counter() - t0
        floor = (time.perf_counter() - started) / n
    finally:
        task.pop_request()
    return Result(
        "P7",
        "job metrics receivers per task",
        round(cost * 1e6, 2),
        "us/task",
        baseline="perf_counter pair",
        baseline_value=round(floor * 1e6, 3),
        ratio=round(cost / floor, 1),
        goal="informative (no goal set)",
        details={"tasks": n},
    )


def run(ctx: Context, quick: bool = False) -> list[Result]:
    n = 2_000 if quick else RECORDS
    return [_log_emit(ctx, n), _job_metrics(n)]

"""P1: no-op tasks per second through Vigil's workers (registry on) vs a bare Celery app.

Method: one Redis server; for each side in turn, the same number of no-op messages is queued up
front, then a worker with the same concurrency (2, prefork) starts and drains them. Throughput is
messages / (time from the first message leaving the queue to the last one acknowledged), so
worker start-up is not counted. Rounds alternate the sides to spread machine noise (on the shared
2-core VM a side's rounds can differ by half); the best round of each side is compared, and the
ratio of medians is printed too.

Vigil's sides run with the prefetch the Procfile (`make run`) gives each pool, read from it
(concurrency 2 on every side, as the notification pool has, so the sides compare):
the job registry (one Lua call per quick job; SQL archiving happens in the service host),
heartbeats with the dead-worker sweep, acks late, atomic fetch. A no-op job is a short job, so the
headline runs it through the short-job pool (notification: `--prefetch-multiplier` from the
Procfile); the long-job pools (detection, analysis, cleanup) run with prefetch 1 so a long job
never holds a second message hostage, and that configuration is measured too, for reference, on
the cleanup pool. A last side turns task events on (`VIGIL_TASK_EVENTS=true`, Flower's task view).
The bare app uses Celery's defaults (acks early, prefetch 4, no events, no results).
Goal: ratio >= 0.85.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time

import redis

from bench.harness import Context, Result, drain_time
from tests.servers import ROOT, CeleryWorker, procfile

CONCURRENCY = 2


def procfile_prefetch(process: str) -> int:
    """The `--prefetch-multiplier` the Procfile gives `process`; without one, Vigil's config applies
    (`worker_prefetch_multiplier=1`)."""
    command = procfile().get(process)
    if command is None:
        raise LookupError(f"no {process!r} process in the Procfile")
    found = re.search(r"--prefetch-multiplier[= ](\d+)", command)
    return int(found.group(1)) if found else 1


# side -> (worker group, queues consumed, queue the no-ops go to, Procfile process, extra env)
SIDES = {
    "vigil": ("notification_worker", ["notification:high", "notification"], "notification", "notification", {}),
    "vigil_long": ("cleanup_service", ["cleanup"], "cleanup", "cleanup", {}),
    "vigil_events": (
        "notification_worker",
        ["notification:high", "notification"],
        "notification",
        "notification",
        {"VIGIL_TASK_EVENTS": "true"},
    ),
    "bare": ("bare", ["bare"], "bare", None, {}),
}
LABELS = {
    "vigil": "no-op tasks/s, Vigil short-job pool as make run starts it, registry on",
    "vigil_long": "no-op tasks/s, Vigil long-job pool (prefetch 1), registry on, for reference",
    "vigil_events": "no-op tasks/s, Vigil short-job pool, registry on + task events for Flower",
}


def run(ctx: Context, quick: bool = False) -> list[Result]:
    n = 1000 if quick else 3000
    rounds = 1 if quick else 5
    env = ctx.env(VIGIL_HEARTBEAT_INTERVAL="2", VIGIL_TASK_EVENTS="false")
    ctx.migrate(env)
    client = redis.Redis.from_url(ctx.redis().url)
    rates: dict[str, list[float]] = {name: [] for name in SIDES}
    for _ in range(rounds):
        for name in SIDES:
            rates[name].append(_round(ctx, name, env, client, n))
    best = {name: max(values) for name, values in rates.items()}
    median = {name: statistics.median(values) for name, values in rates.items()}
    details = {
        "messages_per_round": n,
        "rounds": rounds,
        "concurrency": CONCURRENCY,
        "prefetch": {name: procfile_prefetch(side[3]) if side[3] else 4 for name, side in SIDES.items()},
        **{f"{name}_rounds": [round(r, 1) for r in values] for name, values in rates.items()},
        **{f"median_ratio_{name}": round(median[name] / median["bare"], 3) for name in LABELS},
    }
    out = []
    for name, label in LABELS.items():
        ratio = best[name] / best["bare"]
        headline = name == "vigil"
        out.append(
            Result(
                "P1",
                label,
                round(best[name], 1),
                "tasks/s",
                baseline="bare Celery app, same Redis",
                baseline_value=round(best["bare"], 1),
                ratio=round(ratio, 3),
                goal="ratio >= 0.85" if headline else "",
                met=ratio >= 0.85 if headline else None,
                details=details if headline else {},
            )
        )
    return out


def _wait_completed(client: redis.Redis, queue: str, n: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        completed = client.zcard(f"vigil:jobs:{queue}:completed")
        if completed >= n or time.monotonic() > deadline:
            return completed
        time.sleep(0.05)


def _round(ctx: Context, name: str, env: dict, client: redis.Redis, n: int) -> float:
    group, queues, queue, process, extra = SIDES[name]
    bare = process is None
    app, task = ("bench.bare_app", "bare.noop") if bare else ("workers", "vigil.system.canary")
    module = "bench.bare_app import app as celery" if bare else "workers import celery"
    side_env = dict(env, **extra)
    subprocess.run(
        [sys.executable, "-c", f"from {module}\nfor _ in range({n}): celery.send_task('{task}', queue='{queue}')\n"],
        cwd=ROOT,
        env=side_env,
        check=True,
    )
    assert client.llen(queue) == n
    flags = [] if bare else [f"--prefetch-multiplier={procfile_prefetch(process)}"]
    worker = CeleryWorker(
        side_env, group, queues, concurrency=CONCURRENCY, app=app, extra=flags, log_path=str(ctx.dir / f"{name}.log")
    )
    worker.start(wait=False)
    try:
        seconds = drain_time(client, [queue], n)
        if not bare:
            completed = _wait_completed(client, queue, n)
            assert completed >= n, f"registry recorded {completed} of {n}: " + str(
                {state: client.zcard(f"vigil:jobs:{queue}:{state}") for state in ("waiting", "active", "failed")}
            )
        return n / seconds
    finally:
        worker.stop()
        if not bare:
            client.delete(f"vigil:jobs:{queue}:completed")

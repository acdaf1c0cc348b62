"""P1: no-op tasks per second through Vigil's workers (registry on) vs a bare Celery app.

Method: one Redis server; for each side in turn, the same number of no-op messages is queued up
front, then a worker with the same concurrency (2, prefork) starts and drains them. Throughput is
messages / (time from the first message leaving the queue to the last one acknowledged), so
worker start-up is not counted. Rounds alternate the sides to spread machine noise (on the shared
2-core VM a side's rounds can differ by half); the best round of each side is compared, and the
ratio of medians is printed too.

Vigil's side runs as `make run` configures it: the job registry (one Lua call per quick job, SQL
archiving happens in the service host, not in the workers),
heartbeats with the dead-worker sweep, acks late, prefetch 1. A second line runs
the same with task events on (`VIGIL_TASK_EVENTS=true`, what Flower's task view needs). The bare
app uses Celery's defaults (acks early, prefetch 4, no events, no results). Goal: ratio >= 0.85.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time

import redis

from bench.harness import Context, Result, drain_time
from tests.servers import ROOT, CeleryWorker

CONCURRENCY = 2


def run(ctx: Context, quick: bool = False) -> list[Result]:
    n = 1000 if quick else 3000
    rounds = 1 if quick else 5
    env = ctx.env(VIGIL_HEARTBEAT_INTERVAL="2")
    ctx.migrate(env)
    client = redis.Redis.from_url(ctx.redis().url)
    sides = {"vigil": dict(env, VIGIL_TASK_EVENTS="false"), "vigil_events": dict(env, VIGIL_TASK_EVENTS="true"),
             "bare": env}
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, side_env in sides.items():
            rates[name].append(_round(ctx, name, side_env, client, n))
    best = {name: max(values) for name, values in rates.items()}
    median = {name: statistics.median(values) for name, values in rates.items()}
    details = {"messages_per_round": n, "rounds": rounds, "concurrency": CONCURRENCY,
               **{f"{name}_rounds": [round(r, 1) for r in values] for name, values in rates.items()},
               "median_ratio": round(median["vigil"] / median["bare"], 3),
               "median_ratio_with_events": round(median["vigil_events"] / median["bare"], 3)}
    out = []
    for name, label in (("vigil", "no-op tasks/s, Vigil workers, registry on (make run default)"),
                        ("vigil_events", "no-op tasks/s, Vigil workers, registry on + task events for Flower")):
        ratio = best[name] / best["bare"]
        out.append(Result("P1", label, round(best[name], 1), "tasks/s", baseline="bare Celery app, same Redis",
                          baseline_value=round(best["bare"], 1), ratio=round(ratio, 3), goal="ratio >= 0.85",
                          met=ratio >= 0.85, details=details if name == "vigil" else {}))
    return out


def _wait_completed(client: redis.Redis, queue: str, n: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        completed = client.zcard(f"vigil:jobs:{queue}:completed")
        if completed >= n or time.monotonic() > deadline:
            return completed
        time.sleep(0.05)


def _round(ctx: Context, name: str, env: dict, client: redis.Redis, n: int) -> float:
    bare = name == "bare"
    queue, app, task, group = (("bare", "bench.bare_app", "bare.noop", "bare") if bare else
                               ("cleanup", "workers.celery_app", "vigil.system.canary", "cleanup_service"))
    module = "bench.bare_app import app as celery" if bare else "workers.celery_app import celery"
    subprocess.run([sys.executable, "-c", f"from {module}\nfor _ in range({n}): celery.send_task('{task}', "
                                          f"queue='{queue}')\n"], cwd=ROOT, env=env, check=True)
    assert client.llen(queue) == n
    worker = CeleryWorker(env, group, [queue], concurrency=CONCURRENCY, app=app,
                          log_path=str(ctx.dir / f"{name}.log"))
    worker.start(wait=False)
    try:
        seconds = drain_time(client, [queue], n)
        if not bare:
            completed = _wait_completed(client, queue, n)
            assert completed >= n, f"registry recorded {completed} of {n}: " + str(
                {state: client.zcard(f"vigil:jobs:{queue}:{state}") for state in ("waiting", "active", "failed")})
        return n / seconds
    finally:
        worker.stop()
        if not bare:
            client.delete(f"vigil:jobs:{queue}:completed")

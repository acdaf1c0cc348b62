"""P14: the whole `make run` system's memory (PSS summed over every process) idle and while P13 runs.

Method: P13's system (bench/p13_pipeline_throughput.py: every Procfile process on the benchmark's
own Redis, started by its own Procfile command) plus that Redis. PSS (proportional set size: a page
shared by n processes counts 1/n in each, so the sum is what the system really occupies) is read
from /proc for every process and every child it forked (gunicorn workers, Celery pool processes).
Idle: after every process reported its heartbeat and a settling pause. Under load: sampled every
half second while P13's 300 photographs go through; the largest total is reported, with each
Procfile process's share at that moment.

Baseline, same run: the floor of this architecture: one bare Celery worker (bench/bare_app.py,
prefork, one pool process), one gunicorn (one sync worker serving bench/bare_wsgi.py) and one empty
Redis. The ratio is system / floor; no goal yet beyond writing it down and explaining each share.
"""

from __future__ import annotations

import sys
import threading
import time

import psutil

from bench.harness import Context, Result
from bench.p13_pipeline_throughput import photographs, start_system, workload
from tests.servers import RedisServer, free_port, wait_for


def _pss_mb(pid: int) -> tuple[float, int]:
    """PSS in MB of `pid` and every process it forked, and how many processes that is."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0
    total, count = 0, 0
    for p in procs:
        try:
            total += p.memory_full_info().pss
            count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total / 2**20, count


def _snapshot(pids: dict[str, int]) -> dict[str, tuple[float, int]]:
    return {name: _pss_mb(pid) for name, pid in pids.items()}


def _total(snap: dict[str, tuple[float, int]]) -> float:
    return sum(mb for mb, _ in snap.values())


def _shares(snap: dict[str, tuple[float, int]]) -> dict[str, str]:
    return {name: f"{mb:.0f} MB in {n} process{'es' if n != 1 else ''}" for name, (mb, n) in snap.items()}


def _floor(ctx: Context) -> dict[str, tuple[float, int]]:
    """One bare Celery worker, one bare gunicorn, one empty Redis, idle."""
    redis_server = RedisServer().start()
    try:
        env = ctx.env(REDIS_URL=redis_server.url)
        worker = ctx.spawn(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench.bare_app",
                "worker",
                "-Q",
                "bare",
                "-c",
                "1",
                "-l",
                "WARNING",
            ],
            env,
            "bare-worker",
        )
        port = free_port()
        web = ctx.spawn(
            [sys.executable, "-m", "gunicorn", "-c", "python:bench.bare_wsgi", "-w", "1", "-b", f"127.0.0.1:{port}"]
            + ["bench.bare_wsgi:app"],
            env,
            "bare-gunicorn",
        )
        wait_for(
            lambda: len(psutil.Process(worker.pid).children()) >= 1 and len(psutil.Process(web.pid).children()) >= 1,
            60,
            what="the bare worker's pool process and gunicorn's worker",
        )
        time.sleep(3)
        return {
            "celery_worker": _pss_mb(worker.pid),
            "gunicorn": _pss_mb(web.pid),
            "redis": _pss_mb(redis_server.proc.pid),
        }
    finally:
        ctx.stop_processes()
        redis_server.cleanup()


def run(ctx: Context, quick: bool = False) -> list[Result]:
    photos = photographs(60 if quick else 300)
    env, pids = start_system(ctx)
    pids = {"redis": ctx.redis().proc.pid, **pids}
    time.sleep(5 if quick else 15)  # settle: imports done, first heartbeats and scans over
    idle = _snapshot(pids)

    peak: dict[str, object] = {"total": 0.0, "snap": idle}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            snap = _snapshot(pids)
            if _total(snap) > peak["total"]:
                peak.update(total=_total(snap), snap=snap)
            done.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        outcome = workload(env, photos)
    finally:
        done.set()
        sampler.join(10)
    ctx.stop_processes()
    floor = _floor(ctx)
    floor_total = _total(floor)
    idle_total, load_total = _total(idle), float(peak["total"])
    return [
        Result(
            "P14",
            "make run system PSS, idle",
            round(idle_total, 1),
            "MB",
            baseline="bare Celery worker + bare gunicorn + empty Redis, idle",
            baseline_value=round(floor_total, 1),
            ratio=round(idle_total / floor_total, 2),
            goal="(none yet: written down)",
            details={"processes": _shares(idle), "floor": _shares(floor)},
        ),
        Result(
            "P14",
            f"make run system PSS, peak while P13's {outcome['photos']} photographs run",
            round(load_total, 1),
            "MB",
            baseline="bare Celery worker + bare gunicorn + empty Redis, idle",
            baseline_value=round(floor_total, 1),
            ratio=round(load_total / floor_total, 2),
            goal="(none yet: written down)",
            details={
                "processes": _shares(peak["snap"]),
                "photos_per_s": round(outcome["photos"] / outcome["seconds"], 2),
            },
        ),
    ]

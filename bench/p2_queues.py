"""P2: GET /queues latency with 1,000,000 waiting jobs and 4 workers online, against
`celery inspect active` and Flower's queue-length call in the same run.

Method: one Redis server; the six queues are paused and a worker per group starts (online and
heartbeating, consuming nothing), then 1,000,000 real Celery messages are spread over the six
queues. The API runs under gunicorn as `make run` serves it. Each call is timed from the client,
sequentially, after a warm-up: 500 calls of `GET /api/v1/platform/system/queues`, 20 of
`app.control.inspect(timeout=1).active()` (what a broadcast-per-request design would do), and 200 of
Flower's `GET /api/queues/length` (Flower started on the same broker). Goal: p99 < 20 ms.
"""

from __future__ import annotations

import subprocess
import sys
import time

import redis
import requests

from app.celery.queues import QUEUE_NAMES
from bench.harness import Context, Result, summary_ms, time_calls
from bench.queue_fill import fill_queues, paused_workers
from tests.servers import ROOT, free_port, wait_for


def run(ctx: Context, quick: bool = False) -> list[Result]:
    total = 100_000 if quick else 1_000_000
    env = ctx.env(VIGIL_HEARTBEAT_INTERVAL="2")
    ctx.migrate(env)
    client = redis.Redis.from_url(ctx.redis().url)
    workers = paused_workers(ctx, env)
    per_queue = {
        q: total // len(QUEUE_NAMES) + (1 if i < total % len(QUEUE_NAMES) else 0) for i, q in enumerate(QUEUE_NAMES)
    }
    t0 = time.perf_counter()
    fill_queues(env, client, per_queue)
    fill_s = time.perf_counter() - t0
    base = ctx.api(env)
    session = requests.Session()
    url = f"{base}/api/v1/platform/system/queues"
    body = session.get(url, timeout=10).json()["data"]["queues"]
    counted = sum(q["waiting_jobs"] for q in body)
    assert counted == total, f"GET /queues counted {counted} of {total}"
    assert all(q["paused"] for q in body) and sum(1 for q in body if q["consumers"] == 0) == 6
    vigil = summary_ms(time_calls(lambda: session.get(url, timeout=10).raise_for_status(), 200 if quick else 500))

    from app.celery.app import celery

    celery.conf.broker_url = env["REDIS_URL"]  # this process talks to the benchmark's Redis
    inspect = summary_ms(time_calls(lambda: celery.control.inspect(timeout=1.0).active(), 5 if quick else 20, warmup=2))

    flower_port = free_port()
    log = open(ctx.dir / "flower.log", "wb")
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers", "flower", f"--port={flower_port}", "--address=127.0.0.1"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        flower_url = f"http://127.0.0.1:{flower_port}/api/queues/length"
        flower_auth = ("vigil", env["VIGIL_API_KEY"])  # flowerconfig.py: Flower behind the API key

        def flower_sees_queues():
            r = session.get(flower_url, auth=flower_auth, timeout=5)
            return r.ok and len(r.json().get("active_queues", [])) >= 6

        try:
            wait_for(flower_sees_queues, 60, interval=1, what="Flower to list the queues")
        except TimeoutError:
            raise RuntimeError((ctx.dir / "flower.log").read_text()[-3000:]) from None
        flower_ms = summary_ms(
            time_calls(
                lambda: session.get(flower_url, auth=flower_auth, timeout=10).raise_for_status(), 50 if quick else 200
            )
        )
    finally:
        import os
        import signal

        os.killpg(flower.pid, signal.SIGTERM)
        flower.wait(10)
    details = {
        "waiting_messages": total,
        "workers_online": len(workers),
        "fill_seconds": round(fill_s, 1),
        "vigil": vigil,
        "celery_inspect_active": inspect,
        "flower_queue_length": flower_ms,
    }
    return [
        Result(
            "P2",
            "GET /queues p99, 1M waiting, 4 workers online",
            vigil["p99_ms"],
            "ms",
            baseline="celery inspect active p99",
            baseline_value=inspect["p99_ms"],
            ratio=round(vigil["p99_ms"] / inspect["p99_ms"], 4),
            goal="p99 < 20 ms",
            met=vigil["p99_ms"] < 20,
            details=details,
        ),
        Result(
            "P2",
            "GET /queues p99 vs Flower's queue-length call",
            vigil["p99_ms"],
            "ms",
            baseline="Flower GET /api/queues/length p99",
            baseline_value=flower_ms["p99_ms"],
            ratio=round(vigil["p99_ms"] / flower_ms["p99_ms"], 4),
            goal="p99 < 20 ms",
            met=vigil["p99_ms"] < 20,
        ),
    ]

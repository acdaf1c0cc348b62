"""Watch-to-detect latency: a file fully written to detection task started, p50/p95 over 200 files.

The real path end to end: the service host (`python -m workers.host`: the file watcher on
inotify) and a real detection worker on a real Redis. The benchmark writes each JPEG into a camera
folder and notes the time right after `close()`; the worker's `task_prerun` records when the
detection task started (the registry's `started_at`). Latency = started_at - closed_at, on the
same clock. Files are paced (one per 100 ms) so each one meets an idle worker: this measures the
watcher and the queue, not a backlog.

Baseline, same run, same worker: the raw broker round trip of a no-op task (`vigil.system.canary`
published straight to the `detection` queue, publish to task start), the floor any enqueue-based
design pays. The ratio says what watching adds on top: the close event, the completeness check,
hashing, the camera row and the idempotent enqueue.
"""

from __future__ import annotations

import os
import sys
import time
import uuid

from bench.harness import Context, Result, summary_ms
from tests.servers import wait_for


def _jpeg(cv2, np, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    return buf.tobytes()


def _started(client, job_id: str, field: str = "started_at") -> float | None:
    value = client.hget(f"vigil:job:{job_id}", field)
    return float(value) if value else None


def run(ctx: Context, quick: bool = False) -> list[Result]:
    n = 40 if quick else 200
    env = ctx.env(VIGIL_WATCHER_OBSERVER="native", VIGIL_HEARTBEAT_INTERVAL="0.5")
    ctx.migrate(env)
    # The bench process publishes the baseline's canaries: point its settings at the same servers
    # for the run, and put them back afterwards.
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith(("VIGIL_", "REDIS_URL", "DATABASE_URL"))})
    from app.core.settings import get_settings

    get_settings.cache_clear()
    try:
        return _measure(ctx, env, n)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


def _measure(ctx: Context, env: dict[str, str], n: int) -> list[Result]:
    import cv2
    import numpy as np
    import redis

    from app.core.settings import get_settings

    pace = 0.1
    from app.celery.app import create_celery

    celery = create_celery(get_settings())
    client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)

    ctx.worker("detection_worker", ["detection:high", "detection"], concurrency=1, env=env)
    ctx.spawn([sys.executable, "-m", "workers.host"], env, "host")  # stopped by ctx.close, also on failure
    wait_for(
        lambda: any(k.startswith("vigil:hb:file_watcher@") for k in client.scan_iter("vigil:hb:*")),
        30,
        what="the file watcher's heartbeat",
    )
    camera = ctx.dir / "var" / "cameras" / "bench_cam"
    camera.mkdir(parents=True, exist_ok=True)
    time.sleep(0.5)

    # --- the watcher path ----------------------------------------------------------------------
    payloads = [_jpeg(cv2, np, i) for i in range(n + 5)]
    closed: dict[str, float] = {}
    for i, data in enumerate(payloads):
        path = camera / f"frame_{i:04d}.jpg"
        with open(path, "wb") as fh:
            fh.write(data)
        if i >= 5:  # the first five warm the path up (camera row, connections, model load)
            closed[str(path.resolve())] = time.time()
        time.sleep(pace)

    def all_started():
        ids = client.zrange("vigil:jobs:detection:completed", 0, -1)
        found = {}
        for job_id in ids:
            kwargs = client.hget(f"vigil:job:{job_id}", "kwargs") or ""
            for path in closed:
                if f'"{path}"' in kwargs:
                    found[path] = job_id
        return found if len(found) == len(closed) else None

    jobs = wait_for(all_started, 120, interval=0.5, what="every file's detection job to finish")
    watch = [_started(client, jobs[p]) - t for p, t in closed.items()]
    # Where the time goes: file closed -> job published (the watcher), published -> started.
    to_publish = [_started(client, jobs[p], "created_at") - t for p, t in closed.items()]
    to_start = [_started(client, jobs[p]) - _started(client, jobs[p], "created_at") for p in closed]

    # --- baseline: raw broker round trip of a no-op task ----------------------------------------
    sent: dict[str, float] = {}
    for i in range(n + 5):
        job_id = str(uuid.uuid4())
        t0 = time.time()
        celery.send_task("vigil.system.canary", kwargs={}, queue="detection", task_id=job_id)
        if i >= 5:
            sent[job_id] = t0
        time.sleep(pace)
    wait_for(lambda: all(_started(client, j) for j in sent), 60, interval=0.2, what="the canaries to start")
    base = [_started(client, j) - t for j, t in sent.items()]

    w, b = summary_ms(watch), summary_ms(base)
    return [
        Result(
            "P5",
            "watch_to_detect p95 (file closed -> detection task started)",
            w["p95_ms"],
            "ms",
            baseline="no-op task publish -> start, same queue and worker",
            baseline_value=b["p95_ms"],
            ratio=round(w["p95_ms"] / b["p95_ms"], 3) if b["p95_ms"] else None,
            goal="p95 < 50 ms",
            met=w["p95_ms"] < 50,
            details={
                "watch_to_detect": w,
                "broker_round_trip": b,
                "closed_to_published": summary_ms(to_publish),
                "published_to_started": summary_ms(to_start),
                "files": len(watch),
                "pace_s": pace,
            },
        )
    ]

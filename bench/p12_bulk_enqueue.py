"""P12: bulk enqueue, 10,000 jobs in batches of 500 through POST /jobs/batch vs Celery `send_task` one by one.

Method: as P11 (bench/p11_enqueue.py): one Redis, the API under gunicorn as `make run` starts it,
no consumer. The API side: 4 client threads share the batches (20 of 500 jobs, half of the jobs
with an idempotency key) and post them to `/api/v1/platform/system/jobs/batch`; every answer must
be a 202 with every job created. Baseline, same run: P11's `send_task` loop, 4 threads, registry
receivers on, for the same 10,000 jobs. jobs/s = jobs / wall time; best round of each side.
Goal: ratio >= 2 (a batch must beat a client publishing one by one).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from urllib.parse import urlparse

from bench.harness import Context, Result
from bench.p11_enqueue import THREADS, _send_round

BATCH = 500


def _bodies(total: int) -> list[str]:
    bodies = []
    for start in range(0, total, BATCH):
        jobs = []
        for i in range(start, min(total, start + BATCH)):
            job = {"task": "analysis", "payload": {"batch_id": f"bulk-{i}"}}
            if i % 2:
                job["idempotency_key"] = uuid.uuid4().hex
            jobs.append(job)
        bodies.append(json.dumps({"jobs": jobs}))
    return bodies


def _api_round(base_url: str, total: int) -> float:
    url = urlparse(base_url)
    bodies = _bodies(total)
    failures: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS + 1)

    def work() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
        headers = {"Content-Type": "application/json", "X-API-Key": "bench-key"}
        barrier.wait()
        while True:
            with lock:
                if not bodies:
                    break
                body = bodies.pop()
            conn.request("POST", "/api/v1/platform/system/jobs/batch", body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            if response.status != 202 or json.loads(data)["data"]["created"] != len(json.loads(body)["jobs"]):
                failures.append(f"{response.status} {data[:300]!r}")
        conn.close()

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if failures:
        raise AssertionError(f"{len(failures)} batches failed, e.g. {failures[0]}")
    return total / elapsed


def run(ctx: Context, quick: bool = False) -> list[Result]:
    total = 2000 if quick else 10_000
    rounds = 1 if quick else 3
    env = ctx.env()
    ctx.migrate(env)
    api = ctx.api(env, workers=2, threads=8)
    _api_round(api, BATCH)  # warm: imports, connections, the enqueue script
    rates: dict[str, list[float]] = {"batch": [], "send_task": []}
    for _ in range(rounds):
        rates["batch"].append(_api_round(api, total))
        rates["send_task"].append(_send_round(env, total, registry=True))
    best = {name: max(values) for name, values in rates.items()}
    ratio = best["batch"] / best["send_task"]
    return [
        Result(
            "P12",
            f"API POST /jobs/batch, {total} jobs in batches of {BATCH}, 4 client threads",
            round(best["batch"], 1),
            "jobs/s",
            baseline="Celery send_task one by one from 4 threads, registry receivers on, same Redis",
            baseline_value=round(best["send_task"], 1),
            ratio=round(ratio, 3),
            goal="ratio >= 2",
            met=ratio >= 2,
            details={
                "jobs": total,
                "batch": BATCH,
                "rounds": rounds,
                **{f"{name}_rounds": [round(r, 1) for r in values] for name, values in rates.items()},
            },
        )
    ]

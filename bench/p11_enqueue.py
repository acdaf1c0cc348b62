"""P11: single-job enqueue through the API (POST /jobs, 4 client threads) vs Celery `send_task` from 4 threads.

Method: one Redis server; the API under gunicorn as `make run` starts it (the Procfile's command,
gunicorn.conf.py's default 2 workers x 8 threads); no worker consumes, so only the enqueue is
timed. The API side: 4 client threads in this process, each on its own keep-alive connection,
POST `{"task": "analysis", ...}` with the API key and count the 202s (every answer must be one);
jobs/s = jobs / wall time. Half the jobs carry an idempotency key, as the watcher's do.

Baseline, same Redis, same run: a separate process with the project's Celery app, its publish
signal receivers connected as in every Vigil process (`import app.jobs`: the registry record of
each job), calling `send_task` to the same queue from 4 threads. A second, bare baseline leaves the
receivers out (the broker publish alone), for reference. Rounds alternate the sides to spread the
noise of the shared machine; the best round of each side is compared. Goal: ratio >= 0.7.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
import uuid
from urllib.parse import urlparse

from bench.harness import Context, Result
from tests.servers import ROOT

THREADS = 4
QUEUE = "analysis"

_SEND = """
import sys, threading, time, uuid
{imports}
from app.celery.app import celery
n, threads = int(sys.argv[1]), int(sys.argv[2])
celery.send_task('vigil.analysis.analyze', kwargs={{'batch_id': 'warm'}}, queue='analysis')
def work(k):
    for i in range(n // threads):
        celery.send_task('vigil.analysis.analyze', kwargs={{'batch_id': f'b{{k}}-{{i}}'}}, queue='analysis',
                         task_id=str(uuid.uuid4()))
ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
t0 = time.perf_counter()
for t in ts: t.start()
for t in ts: t.join()
print(time.perf_counter() - t0)
"""


def _api_round(base_url: str, n: int) -> float:
    url = urlparse(base_url)
    per = n // THREADS
    failures: list[str] = []
    barrier = threading.Barrier(THREADS + 1)

    def work(k: int) -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        headers = {"Content-Type": "application/json", "X-API-Key": "bench-key"}
        bodies = []
        for i in range(per):
            body = {"task": "analysis", "payload": {"batch_id": f"b{k}-{i}"}}
            if i % 2:
                body["idempotency_key"] = uuid.uuid4().hex
            bodies.append(json.dumps(body))
        barrier.wait()
        for body in bodies:
            conn.request("POST", "/api/v1/platform/system/jobs", body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            if response.status != 202:
                failures.append(f"{response.status} {data[:200]!r}")
        conn.close()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if failures:
        raise AssertionError(f"{len(failures)} enqueues were not 202, e.g. {failures[0]}")
    return per * THREADS / elapsed


def _send_round(env: dict[str, str], n: int, registry: bool) -> float:
    code = _SEND.format(imports="import app.jobs" if registry else "")
    out = subprocess.run(
        [sys.executable, "-c", code, str(n), str(THREADS)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return n // THREADS * THREADS / float(out.stdout.strip().splitlines()[-1])


def _warm(base_url: str) -> None:
    url = urlparse(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    for i in range(50):
        body = json.dumps({"task": "analysis", "payload": {"batch_id": f"warm{i}"}})
        conn.request("POST", "/api/v1/platform/system/jobs", body=body, headers=_headers())
        response = conn.getresponse()
        response.read()
        assert response.status == 202, response.status
    conn.close()


def _headers() -> dict[str, str]:
    return {"Content-Type": "application/json", "X-API-Key": "bench-key"}


def run(ctx: Context, quick: bool = False) -> list[Result]:
    n = 800 if quick else 3000
    rounds = 1 if quick else 3
    env = ctx.env()
    ctx.migrate(env)
    api = ctx.api(env, workers=2, threads=8)
    _warm(api)
    rates: dict[str, list[float]] = {"api": [], "send_task": [], "send_task_bare": []}
    for _ in range(rounds):
        rates["api"].append(_api_round(api, n))
        rates["send_task"].append(_send_round(env, n, registry=True))
        rates["send_task_bare"].append(_send_round(env, n, registry=False))
    best = {name: max(values) for name, values in rates.items()}
    ratio = best["api"] / best["send_task"]
    return [
        Result(
            "P11",
            "API POST /jobs, 4 client threads, gunicorn as make run starts it",
            round(best["api"], 1),
            "jobs/s",
            baseline="Celery send_task from 4 threads, registry receivers on, same Redis",
            baseline_value=round(best["send_task"], 1),
            ratio=round(ratio, 3),
            goal="ratio >= 0.7",
            met=ratio >= 0.7,
            details={
                "jobs_per_round": n,
                "rounds": rounds,
                **{f"{name}_rounds": [round(r, 1) for r in values] for name, values in rates.items()},
                "send_task_bare_best": round(best["send_task_bare"], 1),
                "ratio_vs_bare_send_task": round(best["api"] / best["send_task_bare"], 3),
            },
        )
    ]

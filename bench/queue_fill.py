"""Shared by P2 and P3: a million waiting messages that are real Celery messages."""

from __future__ import annotations

import json
import subprocess
import sys

import redis

from app.celery.queues import QUEUE_NAMES
from bench.harness import Context, fill
from tests.servers import ROOT, CeleryWorker


def template(env: dict, client: redis.Redis, queue: str) -> tuple[bytes, str]:
    """Publish one real job through Vigil's app and take its message off the list as a template."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "from app.celery.app import celery\n"
                f"print(celery.send_task('vigil.system.canary', kwargs={{'sleep': 0}}, queue='{queue}').id)\n"
            ),
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    job_id = out.stdout.strip().splitlines()[-1]
    raw = client.rpop(queue)
    assert raw and json.loads(raw)["headers"]["id"] == job_id
    return raw, job_id


def paused_workers(ctx: Context, env: dict) -> list[CeleryWorker]:
    """One worker per group, online (heartbeating) but with every queue paused, so the backlog
    stays put while it is measured."""
    client = redis.Redis.from_url(env["REDIS_URL"])
    client.sadd("vigil:queues:paused", *QUEUE_NAMES)
    from app.celery.queues import WORKER_GROUPS

    return [ctx.worker(group, list(queues), concurrency=1, env=env) for group, queues in WORKER_GROUPS.items()]


def fill_queues(env: dict, client: redis.Redis, per_queue: dict[str, int]) -> dict[str, list[str]]:
    ids = {}
    for queue, n in per_queue.items():
        raw, old_id = template(env, client, queue)
        ids[queue] = fill(client, queue, raw, old_id, n)
    return ids

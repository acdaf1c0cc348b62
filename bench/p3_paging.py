"""P3: `GET /queues/detection/jobs?status=waiting&offset=500000` on a 1,000,000-message queue.

Method: 1,000,000 real Celery messages in `detection` (paused, so nothing consumes them), the API
under gunicorn. 300 sequential calls of the page at offset 500,000 (limit 50, the default), timed
from the client after a warm-up, checking each page is the right 50 jobs in run order. Baseline in
the same run: the raw `LRANGE` of those same 50 messages from the benchmark process (the floor any
design pays to read them), and the API's first page (offset 0). Goal: p99 < 50 ms.
"""

from __future__ import annotations

import redis
import requests

from bench.harness import Context, Result, summary_ms, time_calls
from bench.queue_fill import fill_queues, paused_workers


def run(ctx: Context, quick: bool = False) -> list[Result]:
    total = 100_000 if quick else 1_000_000
    offset = total // 2
    env = ctx.env(VIGIL_HEARTBEAT_INTERVAL="2")
    ctx.migrate(env)
    client = redis.Redis.from_url(ctx.redis().url)
    paused_workers(ctx, env)
    ids = fill_queues(env, client, {"detection": total})["detection"]
    base = ctx.api(env)
    session = requests.Session()
    url = f"{base}/api/v1/platform/system/queues/detection/jobs?status=waiting&offset={offset}"
    page = session.get(url, timeout=10).json()["data"]
    assert page["pagination"]["total"] == total
    assert [j["id"] for j in page["jobs"]] == ids[offset : offset + 50], "page is not the 50 jobs in run order"
    deep = summary_ms(time_calls(lambda: session.get(url, timeout=10).raise_for_status(), 100 if quick else 300))
    first = summary_ms(
        time_calls(
            lambda: session.get(url.replace(f"offset={offset}", "offset=0"), timeout=10).raise_for_status(),
            100 if quick else 300,
        )
    )
    raw = summary_ms(
        time_calls(lambda: client.lrange("detection", -(offset + 50), -(offset + 1)), 100 if quick else 300)
    )
    return [
        Result(
            "P3",
            f"GET waiting jobs p99 at offset {offset:,} of {total:,}",
            deep["p99_ms"],
            "ms",
            baseline="raw LRANGE of the same 50 messages p99",
            baseline_value=raw["p99_ms"],
            ratio=round(deep["p99_ms"] / raw["p99_ms"], 2),
            goal="p99 < 50 ms",
            met=deep["p99_ms"] < 50,
            details={"deep_page": deep, "first_page": first, "raw_lrange": raw},
        )
    ]

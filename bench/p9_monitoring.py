"""P9: AI monitoring `GET /dashboard?period=24h` and `GET /metrics?period=7d&granularity=hour` p99, 1,000,000 jobs.

Method: 1,000,000 finished jobs (quick: 100,000) of the two agents spread over the last 7 days, 3 % failed, the
analyser's with token usage, written to the `jobs` table and counted into the rollups by the code the registry
archiver runs (`app.monitoring.rollups.cells_for` + `upsert_cells`), on SQLite and then on PostgreSQL. The API under
gunicorn; 300 sequential calls of each endpoint after a warm-up (100 with --quick), timed from the client.
Baseline in the same run: a plain `SELECT count(*) FROM jobs` over the same rows, from the benchmark process (what
any request that looked at the history would pay at least). Goal: p99 < 50 ms on both databases.
"""

from __future__ import annotations

import csv
import io
import random
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import requests
from sqlalchemy.orm import sessionmaker

from bench.harness import Context, Result, postgres, summary_ms, time_calls

CALLS = {False: 300, True: 100}
JOBS = {False: 1_000_000, True: 100_000}
CHUNK = 50_000


def _jobs(n: int, now: float) -> list[dict[str, Any]]:
    rnd = random.Random(9)
    out = []
    for i in range(n):
        analyser = i % 4 == 0
        finished = now - rnd.random() * 7 * 86400
        latency = rnd.lognormvariate(-2.5 if not analyser else -0.5, 0.6)
        failed = rnd.random() < 0.03
        result = None
        if analyser and not failed:
            result = {"analyser": "llm:nemotron", "input_tokens": 300 + i % 50, "output_tokens": 50 + i % 7}
        out.append(
            {
                "id": f"p9-{i:07d}",
                "task": "vigil.analysis.analyze" if analyser else "vigil.detection.detect",
                "queue": "analysis" if analyser else "detection",
                "state": "failed" if failed else "completed",
                "error": "DetectorUnavailable: detector answered HTTP 503" if failed else None,
                "result": result,
                "started_at": finished - latency,
                "finished_at": finished,
            }
        )
    return out


def _rows(jobs: list[dict[str, Any]]) -> list[tuple]:
    def ts(v: float) -> str:
        return datetime.fromtimestamp(v, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")

    return [
        (
            j["id"],
            j["task"],
            j["queue"],
            j["state"],
            "[]",
            "{}",
            1,
            j["error"],
            ts(j["started_at"] - 0.01),
            ts(j["started_at"]),
            ts(j["finished_at"]),
            ts(j["finished_at"]),
        )
        for j in jobs
    ]


COLUMNS = ", ".join(
    ("id", "task_name", "queue", "state", "args", "kwargs", "attempts", "error_message")
    + ("created_at", "started_at", "finished_at", "updated_at")
)


def _rollup(url: str, jobs: list[dict[str, Any]]) -> None:
    from app.core.db import make_engine
    from app.core.time import iso_utc
    from app.monitoring import rollups

    engine = make_engine(url)
    try:
        factory = sessionmaker(engine)
        for i in range(0, len(jobs), CHUNK):
            batch = [
                dict(j, started_at=iso_utc(j["started_at"]), finished_at=iso_utc(j["finished_at"]))
                for j in jobs[i : i + CHUNK]
            ]
            with factory() as session:
                rollups.upsert_cells(session, rollups.cells_for(batch))
                session.commit()
    finally:
        engine.dispose()


def _load_sqlite(path: str, rows: list[tuple]) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.executemany(f"INSERT INTO jobs ({COLUMNS}) VALUES ({', '.join('?' * 12)})", rows)
        conn.commit()
        conn.execute("ANALYZE")
    finally:
        conn.close()


def _load_pg(dsn: dict[str, Any], rows: list[tuple]) -> None:
    import psycopg2

    conn = psycopg2.connect(**dsn)
    try:
        with conn.cursor() as cur:
            for i in range(0, len(rows), 100_000):
                buf = io.StringIO()
                writer = csv.writer(buf)
                for row in rows[i : i + 100_000]:
                    writer.writerow(["\\N" if v is None else (v + "+00" if k >= 8 else v) for k, v in enumerate(row)])
                buf.seek(0)
                cur.copy_expert(f"COPY jobs ({COLUMNS}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buf)
        conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE")
    finally:
        conn.close()


def _measure(label: str, base: str, count: Callable[[], Any], n: int, total: int) -> list[Result]:
    session = requests.Session()
    dash_url = f"{base}/api/v1/monitoring/dashboard?period=24h"
    series_url = f"{base}/api/v1/monitoring/metrics?period=7d&granularity=hour"
    dash = session.get(dash_url, timeout=30).json()
    series = session.get(series_url, timeout=30).json()
    assert series["metrics"]["requests"]["total"] >= total * 0.99, series["metrics"]["requests"]["total"]
    assert dash["metrics"]["total_requests"] > 0
    baseline = summary_ms(time_calls(count, n // 3, warmup=2))
    results = []
    for name, url in (("dashboard?period=24h", dash_url), ("metrics?period=7d&granularity=hour", series_url)):
        timed = summary_ms(time_calls(lambda url=url: session.get(url, timeout=30).raise_for_status(), n))
        results.append(
            Result(
                "P9",
                f"{label}: GET {name} p99 over {total:,} finished jobs",
                timed["p99_ms"],
                "ms",
                baseline="SELECT count(*) FROM jobs p99",
                baseline_value=baseline["p99_ms"],
                ratio=round(timed["p99_ms"] / baseline["p99_ms"], 3) if baseline["p99_ms"] else None,
                goal="p99 < 50 ms",
                met=timed["p99_ms"] < 50,
                details={"endpoint": timed, "count_baseline": baseline},
            )
        )
    return results


def run(ctx: Context, quick: bool = False) -> list[Result]:
    from app.core.migrate import upgrade

    total, n = JOBS[quick], CALLS[quick]
    now = time.time()
    jobs = _jobs(total, now)
    rows = _rows(jobs)
    results: list[Result] = []

    path = str(ctx.dir / "p9.db")
    url = f"sqlite:///{path}"
    upgrade(url)
    print("  loading SQLite", flush=True)
    _load_sqlite(path, rows)
    _rollup(url, jobs)
    conn = sqlite3.connect(path)
    try:
        results += _measure(
            "SQLite",
            ctx.api(ctx.env(DATABASE_URL=url)),
            lambda: conn.execute("SELECT count(*) FROM jobs").fetchone(),
            n,
            total,
        )
    finally:
        conn.close()

    with postgres("p9") as found:
        if found is not None:
            import psycopg2

            url, dsn = found
            upgrade(url)
            print("  loading PostgreSQL", flush=True)
            _load_pg(dsn, rows)
            _rollup(url, jobs)
            conn = psycopg2.connect(**dsn)
            conn.autocommit = True
            cur = conn.cursor()

            def count() -> Any:
                cur.execute("SELECT count(*) FROM jobs")
                return cur.fetchone()

            try:
                results += _measure("PostgreSQL", ctx.api(ctx.env(DATABASE_URL=url)), count, n, total)
            finally:
                conn.close()
    return results

"""P15 core resources: deep pages of GET /api/events and /api/detections at 1M detections / 100k events.

Method. One database per backend (SQLite, the embedded default, and PostgreSQL started for the run)
is migrated and bulk-loaded (executemany on SQLite, COPY on PostgreSQL, with the listing indexes
built after the load, then ANALYZE / VACUUM ANALYZE) with 100,000 events over 20 cameras and a
year, ten detections each: 1,000,000 detections.
The API runs under gunicorn as `make run` serves it, on that database. Four pages are timed, each
checked to be the same 50 rows as the raw query's:

* `GET /api/events?risk_level=high&reviewed=false&limit=50&offset=N` (the review queue), N at 80 %
  of the matching events, and the same page through `cursor`;
* `GET /api/detections?camera_id=cam_07&limit=50&offset=N`, N at 80 % of the camera's detections,
  and the same page through `cursor`.

Baseline, same run: the raw indexed SELECT of the same page (`... ORDER BY time DESC, id DESC LIMIT
50 OFFSET N`, or the row-value keyset for the cursor page) on a DBAPI connection of the benchmark
process: what any design pays to read those rows. The API pays on top HTTP, the exact `COUNT(*)`,
the page's object types (events) and JSON. Sequential calls after a warm-up, in three rounds of 200
per side, the sides taking turns; the figure is each side's best round (the machine is shared, and
a neighbour's burst lands in one round), every round's p99 is printed. Goal: p99 < 30 ms for
every page on both backends. `GET /api/cameras` (per-camera counts over the million rows) and
`GET /api/events/stats` (last 30 days) are timed too, without a goal.
"""

from __future__ import annotations

import csv
import io
import random
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from bench.harness import Context, Result, postgres, summary_ms, time_calls

SIZES = {True: (10_000, 100_000), False: (100_000, 1_000_000)}  # (events, detections)
CALLS = {True: 100, False: 200}  # timed calls per side, per round
ROUNDS = {True: 1, False: 3}
CAMERAS = 20
KINDS = ("person", "face", "car", "dog", "cat", "bicycle")
LEVELS = ((29, "low"), (59, "medium"), (84, "high"), (100, "critical"))
GOAL_MS = 30.0
EVENT_COLUMNS = (
    "id",
    "batch_id",
    "camera_id",
    "started_at",
    "ended_at",
    "risk_score",
    "risk_level",
    "summary",
    "reasoning",
    "detection_ids",
    "detection_count",
    "analyser",
    "reviewed",
    "created_at",
)
DETECTION_COLUMNS = (
    "id",
    "camera_id",
    "file_path",
    "file_hash",
    "object_type",
    "confidence",
    "bbox_x",
    "bbox_y",
    "bbox_width",
    "bbox_height",
    "thumbnail_path",
    "batch_id",
    "job_id",
    "seen_at",
    "detected_at",
)


# ---- data ---------------------------------------------------------------------------------------------------
def _level(score: int) -> str:
    return next(name for top, name in LEVELS if score <= top)


def _data(n_events: int, n_detections: int) -> tuple[list[tuple], list[tuple]]:
    """Events spread evenly over the year up to now, oldest first (ids follow time, as in production);
    each with `n_detections / n_events` detections a second apart, two per image."""
    rng = random.Random(15)
    per = n_detections // n_events
    end = datetime.now(UTC).replace(microsecond=0)
    step = timedelta(days=365) / n_events
    start = end - timedelta(days=365)
    events, detections = [], []
    det_id = 0
    for i in range(1, n_events + 1):
        camera = f"cam_{i % CAMERAS:02d}"
        at = start + step * i
        score = rng.randint(0, 100)
        events.append(
            (
                i,
                f"b{i:07d}",
                camera,
                at,
                at + timedelta(seconds=per),
                score,
                _level(score),
                f"{per} objects on {camera}",
                "",
                "[]",
                per,
                "builtin",
                rng.random() < 0.3,
                at + timedelta(seconds=per + 5),
            )
        )
        for j in range(per):
            det_id += 1
            detections.append(
                (
                    det_id,
                    camera,
                    f"/cams/{camera}/{i}_{j // 2}.jpg",
                    None,
                    KINDS[rng.randrange(6)],
                    round(0.5 + rng.random() / 2, 4),
                    rng.randrange(600),
                    rng.randrange(400),
                    40,
                    80,
                    None,
                    f"b{i:07d}",
                    f"j{i}_{j // 2}",
                    at + timedelta(seconds=j),
                    at + timedelta(seconds=j, milliseconds=300),
                )
            )
    return events, detections


def _sqlite_value(v: Any) -> Any:
    if isinstance(v, datetime):  # how SQLAlchemy stores UTCDateTime on SQLite: naive UTC text
        return v.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    if isinstance(v, bool):
        return int(v)
    return v


def _secondary_indexes() -> list[Any]:
    """The listing indexes of the two big tables, as the models declare them (the migration made them)."""
    from app.models import Base

    return [ix for table in ("events", "detections") for ix in Base.metadata.tables[table].indexes]


def _without_indexes(url: str, load: Callable[[], None]) -> None:
    """Bulk-load the usual way: drop the secondary indexes, load, build them again (one sort each,
    instead of a random B-tree insert per row per index)."""
    from app.core.db import make_engine

    engine = make_engine(url)
    try:
        for index in _secondary_indexes():
            index.drop(engine)
        load()
        for index in _secondary_indexes():
            index.create(engine)
    finally:
        engine.dispose()


def _load_sqlite(path: str, events: list[tuple], detections: list[tuple]) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MB for the load
        now = _sqlite_value(datetime.now(UTC))
        conn.executemany(
            "INSERT INTO cameras (id, name, folder_path, status, enabled, created_at, last_seen_at) "
            "VALUES (?, ?, ?, 'online', 1, ?, ?)",
            [(f"cam_{c:02d}", f"Camera {c}", f"/cams/cam_{c:02d}", now, now) for c in range(CAMERAS)],
        )
        for table, columns, rows in (("events", EVENT_COLUMNS, events), ("detections", DETECTION_COLUMNS, detections)):
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            for i in range(0, len(rows), 50_000):
                conn.executemany(sql, [tuple(_sqlite_value(v) for v in row) for row in rows[i : i + 50_000]])
        conn.commit()
    finally:
        conn.close()


def _analyze_sqlite(path: str) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("ANALYZE")
        conn.commit()
    finally:
        conn.close()


def _pg_value(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, bool):
        return "t" if v else "f"
    return v


def _load_pg(dsn: dict[str, Any], events: list[tuple], detections: list[tuple]) -> None:
    import psycopg2

    conn = psycopg2.connect(**dsn)
    try:
        with conn.cursor() as cur:
            now = datetime.now(UTC)
            cur.executemany(
                "INSERT INTO cameras (id, name, folder_path, status, enabled, created_at, last_seen_at) "
                "VALUES (%s, %s, %s, 'online', true, %s, %s)",
                [(f"cam_{c:02d}", f"Camera {c}", f"/cams/cam_{c:02d}", now, now) for c in range(CAMERAS)],
            )
            for table, columns, rows in (
                ("events", EVENT_COLUMNS, events),
                ("detections", DETECTION_COLUMNS, detections),
            ):
                for i in range(0, len(rows), 100_000):
                    buf = io.StringIO()
                    writer = csv.writer(buf)
                    for row in rows[i : i + 100_000]:
                        writer.writerow(["\\N" if v is None else _pg_value(v) for v in row])
                    buf.seek(0)
                    copy = f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
                    cur.copy_expert(copy, buf)
            for table in ("events", "detections"):  # the loader chose the ids; the sequences follow them
                cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        conn.commit()
    finally:
        conn.close()


def _vacuum_pg(dsn: dict[str, Any]) -> None:
    import psycopg2

    conn = psycopg2.connect(**dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE")  # what autovacuum does to a settled table: visibility map, statistics
    finally:
        conn.close()


# ---- pages --------------------------------------------------------------------------------------------------
class Raw:
    """The baseline: the page's SELECT on a DBAPI connection, placeholders in the driver's style."""

    def __init__(self, connect: Callable[[], Any], placeholder: str, to_db: Callable[[Any], Any]):
        self.conn = connect()
        self.ph = placeholder
        self.to_db = to_db

    def rows(self, sql: str, params: tuple) -> list[tuple]:
        cur = self.conn.cursor()
        cur.execute(sql.replace("?", self.ph), tuple(self.to_db(p) for p in params))
        out = cur.fetchall()
        cur.close()
        return out

    def close(self) -> None:
        self.conn.close()


def _pages(raw: Raw) -> list[dict[str, Any]]:
    """The four pages: their API URL and the raw SQL (with parameters) of the same 50 rows."""
    from app.pipeline.paging import encode_cursor

    def parse_time(v: Any) -> datetime:
        if isinstance(v, datetime):
            return v.astimezone(UTC)
        return datetime.fromisoformat(v).replace(tzinfo=UTC)

    out = []
    for resource, time_col, where, params, query in (
        ("events", "started_at", "risk_level = ? AND reviewed = ?", ("high", False), "risk_level=high&reviewed=false"),
        ("detections", "detected_at", "camera_id = ?", ("cam_07",), "camera_id=cam_07"),
    ):
        total = raw.rows(f"SELECT count(*) FROM {resource} WHERE {where}", params)[0][0]
        offset = int(total * 0.8) // 50 * 50
        order = f"ORDER BY {time_col} DESC, id DESC"
        offset_sql = f"SELECT * FROM {resource} WHERE {where} {order} LIMIT 50 OFFSET {offset}"
        before = raw.rows(
            f"SELECT {time_col}, id FROM {resource} WHERE {where} {order} LIMIT 1 OFFSET {offset - 1}", params
        )[0]
        cursor = encode_cursor(parse_time(before[0]), before[1])
        keyset_sql = f"SELECT * FROM {resource} WHERE {where} AND ({time_col}, id) < (?, ?) {order} LIMIT 50"
        cursor_params = (*params, parse_time(before[0]), before[1])
        out.append(
            {
                "name": f"{resource} offset",
                "resource": resource,
                "total": total,
                "depth": offset,
                "url": f"/api/{resource}?{query}&limit=50&offset={offset}",
                "sql": offset_sql,
                "params": params,
            }
        )
        out.append(
            {
                "name": f"{resource} cursor",
                "resource": resource,
                "total": total,
                "depth": offset,
                "url": f"/api/{resource}?{query}&limit=50&cursor={cursor}",
                "sql": keyset_sql,
                "params": cursor_params,
            }
        )
    return out


def _rounds(calls: int, rounds: int, *sides: Callable[[], Any]) -> list[list[dict[str, float]]]:
    """`rounds` rounds of `calls` timed calls of each side, the sides taking turns within a round, so
    a burst of load on the shared machine hits both; per side, each round's summary."""
    out: list[list[dict[str, float]]] = [[] for _ in sides]
    for _ in range(rounds):
        for i, side in enumerate(sides):
            out[i].append(summary_ms(time_calls(side, calls)))
    return out


def _best(rounds: list[dict[str, float]]) -> dict[str, float]:
    return min(rounds, key=lambda r: r["p99_ms"])


def _measure(label: str, base: str, raw: Raw, calls: int, rounds: int) -> list[Result]:
    session = requests.Session()
    results = []
    for page in _pages(raw):
        body = session.get(base + page["url"], timeout=30).json()
        want = [row[0] for row in raw.rows(page["sql"], page["params"])]
        got = [row["id"] for row in body[page["resource"]]]
        assert got == want, f"{label} {page['name']}: the API's page is not the raw query's"
        assert body["count"] == page["total"], (body["count"], page["total"])
        api_rounds, raw_rounds = _rounds(
            calls,
            rounds,
            lambda u=base + page["url"]: session.get(u, timeout=30).raise_for_status(),
            lambda p=page: raw.rows(p["sql"], p["params"]),
        )
        api, base_ms = _best(api_rounds), _best(raw_rounds)
        results.append(
            Result(
                "P15",
                f"{label}: GET {page['name']} page p99, row {page['depth']:,} of {page['total']:,}",
                api["p99_ms"],
                "ms",
                baseline="raw indexed SELECT of the same page p99",
                baseline_value=base_ms["p99_ms"],
                ratio=round(api["p99_ms"] / base_ms["p99_ms"], 2) if base_ms["p99_ms"] else None,
                goal=f"p99 < {GOAL_MS:g} ms",
                met=api["p99_ms"] < GOAL_MS,
                details={
                    "api": api,
                    "raw_select": base_ms,
                    "url": page["url"].split("&cursor=")[0],
                    "p99_per_round": {
                        "api": [r["p99_ms"] for r in api_rounds],
                        "raw_select": [r["p99_ms"] for r in raw_rounds],
                    },
                },
            )
        )
    for what, url in (
        ("GET /api/cameras (counts over every row)", "/api/cameras"),
        ("GET /api/events/stats (last 30 days)", "/api/events/stats"),
    ):
        session.get(base + url, timeout=30).raise_for_status()
        timed = summary_ms(
            time_calls(
                lambda u=base + url: session.get(u, timeout=30).raise_for_status(), max(20, calls // 5), warmup=3
            )
        )
        results.append(
            Result(
                "P15",
                f"{label}: {what} p99",
                timed["p99_ms"],
                "ms",
                goal="informative (no goal set)",
                details={"api": timed},
            )
        )
    return results


def run(ctx: Context, quick: bool = False) -> list[Result]:
    from app.core.migrate import upgrade

    n_events, n_detections = SIZES[quick]
    print(f"  generating {n_events:,} events and {n_detections:,} detections", flush=True)
    events, detections = _data(n_events, n_detections)
    results: list[Result] = []

    path = str(ctx.dir / "p15.db")
    url = f"sqlite:///{path}"
    upgrade(url)
    print("  loading SQLite", flush=True)
    _without_indexes(url, lambda: _load_sqlite(path, events, detections))
    _analyze_sqlite(path)
    raw = Raw(lambda: sqlite3.connect(path), "?", _sqlite_value)
    try:
        results += _measure("SQLite", ctx.api(ctx.env(DATABASE_URL=url)), raw, CALLS[quick], ROUNDS[quick])
    finally:
        raw.close()

    with postgres("p15") as found:
        if found is not None:
            import psycopg2

            url, dsn = found
            upgrade(url)
            print("  loading PostgreSQL", flush=True)
            _without_indexes(url, lambda: _load_pg(dsn, events, detections))
            _vacuum_pg(dsn)
            raw = Raw(lambda: psycopg2.connect(**dsn), "%s", lambda v: v)
            raw.conn.autocommit = True
            try:
                results += _measure("PostgreSQL", ctx.api(ctx.env(DATABASE_URL=url)), raw, CALLS[quick], ROUNDS[quick])
            finally:
                raw.close()
    return results

"""The batch aggregator on real Redis: windows, idle timeouts, several processes at once, and the
handoff to analysis that loses nothing and enqueues each batch once (real broker and registry)."""

import multiprocessing
import time
import uuid

import pytest
from sqlalchemy import select

from app.core.redis_client import get_broker_redis, get_redis
from app.core.settings import replace
from app.jobs.registry import get_registry
from app.models import DetectionBatch
from app.pipeline.batches import DEADLINES, OUTBOX, BatchAggregator, handoff, record_closed


@pytest.fixture
def agg(settings):
    """The aggregator; batches these tests leave behind (some at made-up times) are removed, so the
    deadline set and outbox other tests and the session's closer see hold only real batches."""
    client = get_redis(settings)
    yield BatchAggregator(client)
    for key in (DEADLINES, OUTBOX):
        for bid in client.zrange(key, 0, -1):
            if (client.hget(f"vigil:batch:{bid}", "camera_id") or "").startswith("tcam_"):
                client.zrem(key, bid)


def cam() -> str:
    return f"tcam_{uuid.uuid4().hex[:8]}"


def test_detections_join_the_open_batch_until_the_window_ends(agg):
    c, t0 = cam(), 1_000_000.0
    b1, n, opened = agg.add(c, [1], window=10, idle=5, now=t0)
    assert opened and n == 1
    b2, n, opened = agg.add(c, [2, 3], window=10, idle=5, now=t0 + 4)
    assert b2 == b1 and n == 3 and not opened
    assert b1 not in agg.close_due(now=t0 + 8.9)  # idle deadline is 4 + 5 = 9
    b3, n, _ = agg.add(c, [4], window=10, idle=5, now=t0 + 8.5)
    assert b3 == b1 and n == 4
    assert b1 not in agg.close_due(now=t0 + 9.99)  # window ends at 10, idle would be 13.5
    assert b1 in agg.close_due(now=t0 + 10.0)
    batch = agg.get(b1)
    assert batch["close_reason"] == "window" and batch["detection_ids"] == [1, 2, 3, 4]
    assert b1 in agg.outbox()
    b4, n, opened = agg.add(c, [5], window=10, idle=5, now=t0 + 11)
    assert b4 != b1 and opened and n == 1


def test_idle_timeout_closes_a_quiet_batch(agg):
    c, t0 = cam(), 2_000_000.0
    b, _, _ = agg.add(c, [1], window=90, idle=30, now=t0)
    assert b not in agg.close_due(now=t0 + 29)
    assert b in agg.close_due(now=t0 + 30)
    assert agg.get(b)["close_reason"] == "idle"


def test_a_late_detection_never_stretches_a_window(agg):
    """If the closer is late, the next detection closes the old batch itself and opens a new one."""
    c, t0 = cam(), 3_000_000.0
    b1, _, _ = agg.add(c, [1], window=10, idle=5, now=t0)
    b2, n, opened = agg.add(c, [2], window=10, idle=5, now=t0 + 6)
    assert b2 != b1 and opened and n == 1
    assert agg.get(b1)["status"] == "closed" and agg.get(b1)["detection_ids"] == [1]


def test_cameras_have_separate_batches(agg):
    t0 = 4_000_000.0
    a, _, _ = agg.add(cam(), [1], window=10, idle=5, now=t0)
    b, _, _ = agg.add(cam(), [2], window=10, idle=5, now=t0)
    assert a != b


def _adder(url, camera, start, count):
    import redis as redis_lib

    from app.pipeline.batches import BatchAggregator

    a = BatchAggregator(redis_lib.Redis.from_url(url, decode_responses=True))
    return [a.add(camera, [start + i], window=600, idle=600)[0] for i in range(count)]


def test_several_processes_adding_at_once_make_one_batch(settings, agg):
    c = cam()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.starmap(_adder, [(settings.redis_url, c, k * 1000, 50) for k in range(4)])
    ids = {bid for chunk in results for bid in chunk}
    assert len(ids) == 1
    batch = agg.get(ids.pop())
    assert batch["detection_count"] == 200 and len(batch["detection_ids"]) == 200
    agg.close_due(now=time.time() + 601)


def test_handoff_enqueues_one_analysis_per_batch_and_survives_a_crash(settings, session_factory, db_url, agg):
    """Closed batches become SQL records and analysis jobs; a handoff interrupted after the enqueue
    (crash before leaving the outbox) repeats without a second job."""
    from app.core.db import session_scope
    from app.pipeline.cameras import ensure_camera

    s = replace(settings, database_url=db_url)
    c = cam()
    with session_scope(s) as session:
        ensure_camera(session, c, c, "/tmp")
    t0 = time.time() - 100
    bid, _, _ = agg.add(c, [11, 12], window=10, idle=5, now=t0, seen_at=t0 - 0.2)
    assert bid in agg.close_due(now=t0 + 10)

    sent = []

    def crashing_enqueue(family, payload, **kw):
        from app.jobs.enqueue import enqueue

        job = enqueue(family, payload, **kw)
        sent.append(job)
        raise ConnectionError("process died right after publishing")

    assert handoff(s, agg, enqueue_fn=crashing_enqueue) == []
    assert bid in agg.outbox()  # still owed
    assert handoff(s, agg) == [bid]
    assert bid not in get_redis(s).zrange(OUTBOX, 0, -1)
    job_id = sent[0].job_id
    record = get_registry(s).get(job_id)
    assert record["task"] == "vigil.analysis.analyze" and record["queue"] == "analysis"
    assert record["kwargs"] == {"batch_id": bid, "camera_id": c}
    assert agg.get(bid)["analysis_job_id"] == job_id  # the second handoff got the same job back
    with session_factory() as db:
        row = db.execute(select(DetectionBatch).where(DetectionBatch.id == bid)).scalar_one()
    assert (row.camera_id, row.detection_count, row.close_reason, row.analysis_job_id) == (c, 2, "window", job_id)
    assert abs(row.first_seen_at.timestamp() - (t0 - 0.2)) < 0.01
    record_closed(s, agg.get(bid), job_id)  # repeating the record is harmless
    get_registry(s).forget(job_id)
    broker = get_broker_redis(s)  # take the message back: no worker should analyse a made-up batch
    for raw in broker.lrange("analysis", 0, -1):
        if job_id.encode() in raw:
            broker.lrem("analysis", 0, raw)

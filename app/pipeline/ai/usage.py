"""What each AI model did: inference counts, last use, and per-inference times, as the detection and
analysis jobs run (GET /api/system/models, /api/system/model-zoo/latency/history).

Kept in Redis, not SQL, because it is written on the hot path of every detection: one pipelined round
trip per call. Per model:

* `vigil:model:usage:<name>`: a hash with `inference_count` (HINCRBY, so concurrent workers add up),
  `last_used` (epoch seconds), `last_ms`, `load_time_ms` (when the backend loaded it), `backend`, and
  `pid:<pid>` (last use) for each worker process that ran it, so the registry can attribute NVML
  per-process GPU memory to the model;
* `vigil:model:lat:<name>`: a sorted set of inference times scored by when they happened, like the
  pipeline stages in app/pipeline/telemetry.py, trimmed to `latency_retention_hours` and to about
  `MAX_SAMPLES` members. Trimming is one call in `TRIM_EVERY` (at random), so a detection pays three
  commands per model (bench P16), and a set holds at most a few dozen samples past either bound.

Recording never fails the work it describes: a Redis error is logged and dropped.
"""

from __future__ import annotations

import logging
import os
import random
import time
from typing import Any

import redis

from app.core.redis_client import KEY_PREFIX, get_redis
from app.core.settings import Settings
from app.core.stats import summarize
from app.core.time import iso_utc

log = logging.getLogger(__name__)

USAGE_KEY = KEY_PREFIX + "model:usage:"
LATENCY_KEY = KEY_PREFIX + "model:lat:"
MAX_SAMPLES = 50_000  # per model: ~3 MB of Redis at most, hours of a busy detector
MAX_SAMPLES_READ = 200_000
PID_TTL = 3600.0  # a process not seen running a model for an hour no longer holds its memory
TRIM_EVERY = 16


def record(
    settings: Settings,
    timings: dict[str, float],
    *,
    backend: str,
    at: float | None = None,
    load_times: dict[str, float] | None = None,
    client: redis.Redis | None = None,
) -> None:
    """One inference of each model in `timings` (name -> ms), all in one round trip."""
    if not timings:
        return
    try:
        client = client or get_redis(settings)
        with client.pipeline(transaction=False) as pipe:
            queue_record(pipe, settings, timings, backend=backend, at=at, load_times=load_times)
            pipe.execute()
    except redis.RedisError:
        log.warning("could not record model usage of %s", ", ".join(timings), exc_info=True)


def queue_record(
    pipe: redis.client.Pipeline,
    settings: Settings,
    timings: dict[str, float],
    *,
    backend: str,
    at: float | None = None,
    load_times: dict[str, float] | None = None,
) -> None:
    """`record`'s commands, queued on a pipeline the caller sends with its own writes."""
    at = time.time() if at is None else at
    pid = os.getpid()
    cutoff = at - settings.latency_retention_hours * 3600
    trim = random.random() < 1 / TRIM_EVERY
    for name, ms in timings.items():
        ms = max(0.0, float(ms))
        fields: dict[str, Any] = {
            "last_used": f"{at:.6f}",
            "last_ms": f"{ms:.3f}",
            "backend": backend,
            f"pid:{pid}": f"{at:.3f}",
        }
        if load_times and load_times.get(name) is not None:
            fields["load_time_ms"] = f"{float(load_times[name]):.3f}"
        pipe.hincrby(USAGE_KEY + name, "inference_count", 1)
        pipe.hset(USAGE_KEY + name, mapping=fields)
        pipe.zadd(LATENCY_KEY + name, {f"{at:.6f}:{ms:.3f}:{os.urandom(3).hex()}": at})
        if trim:
            pipe.zremrangebyscore(LATENCY_KEY + name, "-inf", cutoff)
            pipe.zremrangebyrank(LATENCY_KEY + name, 0, -(MAX_SAMPLES + 1))


def usage(settings: Settings, names: list[str], client: redis.Redis | None = None) -> dict[str, dict[str, Any]]:
    """Each named model's counters: `inference_count` (0 when never used), `last_used` (epoch or
    None), `last_ms`, `load_time_ms`, `pids` (processes that ran it within `PID_TTL`)."""
    client = client or get_redis(settings)
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(USAGE_KEY + name)
        answers = pipe.execute()
    now = time.time()
    out: dict[str, dict[str, Any]] = {}
    for name, raw in zip(names, answers):
        pids = {k[4:]: v for k, v in raw.items() if k.startswith("pid:")}

        def num(key: str, raw: dict = raw) -> float | None:
            value = raw.get(key)
            return float(value) if value not in (None, "") else None

        out[name] = {
            "inference_count": int(raw.get("inference_count") or 0),
            "last_used": num("last_used"),
            "last_ms": num("last_ms"),
            "load_time_ms": num("load_time_ms"),
            "backend": raw.get("backend"),
            "pids": sorted(int(p) for p, seen in pids.items() if now - float(seen) <= PID_TTL),
        }
    return out


def samples(
    settings: Settings, name: str, since: float, client: redis.Redis | None = None
) -> list[tuple[float, float]]:
    """(when, ms) of each recorded inference of `name` since `since`, newest first (a set trimmed
    only now and then may hold older ones: they are not read)."""
    client = client or get_redis(settings)
    out = []
    for member in client.zrevrangebyscore(LATENCY_KEY + name, "+inf", since, start=0, num=MAX_SAMPLES_READ):
        ts, _, rest = member.partition(":")
        out.append((float(ts), float(rest.partition(":")[0])))
    return out


def latency_history(settings: Settings, name: str, since_minutes: int, bucket_seconds: int) -> dict[str, Any]:
    """One snapshot per `bucket_seconds` bucket (aligned to the epoch) that holds samples, oldest first."""
    buckets: dict[int, list[float]] = {}
    for ts, ms in samples(settings, name, time.time() - since_minutes * 60):
        buckets.setdefault(int(ts // bucket_seconds) * bucket_seconds, []).append(ms)
    snapshots = []
    for start in sorted(buckets):
        s = summarize(buckets[start])
        assert s is not None
        snapshots.append(
            {
                "timestamp": iso_utc(start),
                "avg_ms": s["avg_ms"],
                "p50_ms": s["p50_ms"],
                "p95_ms": s["p95_ms"],
                "sample_count": s["sample_count"],
            }
        )
    return {"model": name, "snapshots": snapshots, "count": len(snapshots)}

"""Hand back the jobs of a worker that died without a word.

With late acks, a job a worker fetched stays in the broker's `unacked` hash until acknowledged.
kombu hands such messages to another worker only after the visibility timeout (30 minutes here,
see docs/architecture.md), which is right for a slow job and far too slow for a killed worker.
Every live worker says in its heartbeat which messages it holds (running, prefetched, or
scheduled with an ETA). A message that has been unacknowledged for longer than a heartbeat can be
stale, and that no live worker claims, belongs to a dead worker: it goes back to the front of its
queue through kombu's own restore path, at once.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from app.celery.broker import Broker
from app.celery.queues import QUEUE_NAMES
from app.core.redis_client import KEY_PREFIX
from app.jobs import heartbeats
from app.jobs.registry import JobRegistry

log = logging.getLogger(__name__)

LOCK_KEY = KEY_PREFIX + "lock:orphans"


def restore_orphans(channel: Any, broker: Broker, client: redis.Redis, registry: JobRegistry, ttl: float) -> list[str]:
    """Restore unacknowledged Vigil messages no live worker holds; returns their job ids.

    `channel` is a kombu Redis channel (its `qos.restore_by_tag` re-queues a message atomically);
    `ttl` is the heartbeat TTL: messages younger than twice that are left alone, because their
    worker may not have reported them yet.
    """
    cutoff = time.time() - 2 * ttl
    if broker.unacked_older_than(cutoff) == 0:
        return []
    if not client.set(LOCK_KEY, "1", nx=True, ex=30):
        return []
    restored: list[str] = []
    try:
        beats = [b for b in heartbeats.alive(client, ttl) if b.get("kind") == "celery"]
        if any(b.get("held_truncated") for b in beats):
            return []  # a worker holds more than it can report: leave it to the visibility timeout
        held: set[str] = set()
        for beat in beats:
            held.update(beat.get("held_ids") or [])
        for tag, message, delivered_at in list(broker.unacked()):
            if delivered_at is None or delivered_at > cutoff or message.id in held:
                continue
            if not message.task.startswith("vigil."):
                continue  # not ours: another app's consumer may share the broker
            channel.qos.restore_by_tag(tag)
            registry.record_requeued(message.id, "requeued: the worker holding it stopped heartbeating")
            restored.append(message.id)
    finally:
        client.delete(LOCK_KEY)
    if restored:
        broker.ring(list(QUEUE_NAMES))
        log.warning("restored %d job(s) held by a dead worker: %s", len(restored), restored[:10])
    return restored

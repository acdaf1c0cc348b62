"""Queue state shared by the API and the workers: which queues are paused, which groups stopped.

Pausing is persisted here *and* broadcast with Celery's `cancel_consumer`; workers re-apply the
persisted state when they start and on every heartbeat, so a worker that starts later, or missed
the broadcast, converges on it.
"""
from __future__ import annotations

import redis

from app.redis_client import KEY_PREFIX

PAUSED_KEY = KEY_PREFIX + "queues:paused"          # set of queue names
STOPPED_GROUPS_KEY = KEY_PREFIX + "workers:stopped"  # set of worker group names


def paused_queues(client: redis.Redis) -> set[str]:
    return set(client.smembers(PAUSED_KEY))


def stopped_groups(client: redis.Redis) -> set[str]:
    return set(client.smembers(STOPPED_GROUPS_KEY))


def desired_queues(client: redis.Redis, group: str, assigned: list[str]) -> list[str]:
    """The queues a worker of `group`, started with `assigned`, should consume right now."""
    with client.pipeline(transaction=False) as pipe:
        pipe.smembers(PAUSED_KEY)
        pipe.sismember(STOPPED_GROUPS_KEY, group)
        paused, stopped = pipe.execute()
    if stopped:
        return []
    return [q for q in assigned if q not in paused]

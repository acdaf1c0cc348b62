"""The persisted process count of a Celery worker group's pool (POST /api/v1/monitoring/agents/{id}/scale).

The scale is broadcast with the `vigil_pool_scale` remote control command (workers/hooks/bootsteps.py: Celery's
`pool_grow`/`pool_shrink` by the difference to the target) for an immediate effect and kept in
`vigil:pools:concurrency` (group -> processes), which every worker converges on at start and on each
heartbeat (workers/hooks/bootsteps.py): a worker that restarts, or missed the broadcast, keeps the scale.
A group without an entry keeps the `--concurrency` it was started with.
"""

from __future__ import annotations

import redis

from app.core.redis_client import KEY_PREFIX

CONCURRENCY_KEY = KEY_PREFIX + "pools:concurrency"


def desired_concurrency(client: redis.Redis, group: str) -> int | None:
    value = client.hget(CONCURRENCY_KEY, group)
    return int(value) if value else None


def set_desired_concurrency(client: redis.Redis, group: str, processes: int) -> None:
    client.hset(CONCURRENCY_KEY, group, int(processes))


def converge_pool(pool: object, want: int | None) -> int:
    """Grow or shrink a prefork pool to `want` processes; returns the change applied (0: none).

    Absolute, so the broadcast and the heartbeat's convergence can both apply it without adding up.
    Only idle processes can be retired: a busy one stays until a later call finds it idle."""
    have = getattr(pool, "num_processes", None)
    if not want or not isinstance(have, int) or have == want:
        return 0
    if want > have:
        pool.grow(want - have)  # type: ignore[attr-defined]
        return want - have
    done = 0
    for _ in range(have - want):
        try:
            pool.shrink(1)  # type: ignore[attr-defined]
        except ValueError:  # every remaining process is busy
            break
        done -= 1
    return done

"""Redis connections for Vigil's own keys (registry, heartbeats, pauses, batches).

Kombu keeps its own connections for the broker; these are separate so a slow registry read never
queues behind a blocking BRPOP. redis-py pools are fork-aware (they reset when the pid changes).
"""

from __future__ import annotations

import os
import threading

import redis

from app.core.settings import Settings, get_settings

KEY_PREFIX = "vigil:"

_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}


def _after_fork_in_child() -> None:
    """Celery's prefork pool forks while other threads (heartbeats, the registry archiver) may be
    inside a client's connection pool, holding its lock; a child that reused that pool would wait
    on the copy of that lock forever. Children start with a fresh lock and fresh clients instead
    (redis-py closes inherited sockets without shutting them down, so the parent is unaffected)."""
    global _lock
    _lock = threading.Lock()
    _clients.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def get_redis(settings: Settings | None = None) -> redis.Redis:
    """A shared client (str responses) for `settings.redis_url`."""
    url = (settings or get_settings()).redis_url
    client = _clients.get(url)
    if client is None:
        with _lock:
            client = _clients.get(url)
            if client is None:
                client = redis.Redis.from_url(
                    url,
                    decode_responses=True,
                    socket_timeout=5,
                    socket_connect_timeout=2,
                    health_check_interval=30,
                    retry_on_timeout=True,
                )
                _clients[url] = client
    return client


def get_broker_redis(settings: Settings | None = None) -> redis.Redis:
    """A client on the broker's database, with raw bytes, for reading kombu's own lists."""
    url = (settings or get_settings()).broker_url
    key = "broker:" + url
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = redis.Redis.from_url(
                    url, decode_responses=False, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
                )
                _clients[key] = client
    return client

"""Liveness that processes publish and the API reads: no broadcast on a request path.

Every Celery worker, beat and the service host write `vigil:hb:{node}` (JSON, with a TTL) and
bump `vigil:hb` (sorted set node -> last beat) every `heartbeat_interval` seconds. A node is alive
while its last beat is younger than `heartbeat_ttl`. Reading all of them is two Redis calls.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from app.celery.queues import group_of
from app.core.redis_client import KEY_PREFIX

log = logging.getLogger(__name__)

HB_INDEX = KEY_PREFIX + "hb"
HB_KEY = KEY_PREFIX + "hb:"
# Nodes silent for longer than this are dropped from the index entirely.
FORGET_AFTER = 24 * 3600


def node_name(group: str) -> str:
    return f"{group}@{socket.gethostname()}"


def publish(client: redis.Redis, node: str, payload: dict[str, Any], ttl: float) -> None:
    now = time.time()
    body = dict(payload, node=node, group=group_of(node), ts=now)
    with client.pipeline(transaction=False) as pipe:
        pipe.set(HB_KEY + node, json.dumps(body, separators=(",", ":")), px=int(ttl * 1000))
        pipe.zadd(HB_INDEX, {node: now})
        pipe.zremrangebyscore(HB_INDEX, "-inf", now - FORGET_AFTER)
        pipe.execute()


def remove(client: redis.Redis, node: str) -> None:
    with client.pipeline(transaction=False) as pipe:
        pipe.delete(HB_KEY + node)
        pipe.zrem(HB_INDEX, node)
        pipe.execute()


def alive(client: redis.Redis, ttl: float) -> list[dict[str, Any]]:
    """Heartbeats of every node seen within `ttl` seconds."""
    return load(client, client.zrangebyscore(HB_INDEX, time.time() - ttl, "+inf"))


def load(client: redis.Redis, nodes: list[str]) -> list[dict[str, Any]]:
    """The heartbeat bodies of `nodes` (those whose key has not expired)."""
    if not nodes:
        return []
    out = []
    for raw in client.mget([HB_KEY + n for n in nodes]):
        if raw:
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
    return out


def last_seen(client: redis.Redis) -> dict[str, float]:
    """Every node still in the index with the time of its last beat (alive or not)."""
    return {node: score for node, score in client.zrange(HB_INDEX, 0, -1, withscores=True)}


def by_group(beats: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for beat in beats:
        groups.setdefault(beat.get("group") or group_of(beat.get("node", "")), []).append(beat)
    return groups


class HeartbeatThread:
    """Publishes a heartbeat from a thread, for processes without a Celery event loop."""

    def __init__(
        self,
        client: redis.Redis,
        node: str,
        interval: float,
        ttl: float,
        payload: Callable[[], dict[str, Any]] | None = None,
    ):
        self.client, self.node, self.interval, self.ttl = client, node, interval, ttl
        self.payload = payload or (dict)
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        try:
            body = {"pid": os.getpid(), "started_at": self.started_at}
            body.update(self.payload())
            publish(self.client, self.node, body, self.ttl)
        except Exception:  # Redis away: the missing heartbeat is itself the signal
            log.debug("heartbeat for %s failed", self.node, exc_info=True)

    def start(self) -> HeartbeatThread:
        self.beat()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.node}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        try:
            remove(self.client, self.node)
        except Exception:
            log.debug("heartbeat removal for %s failed", self.node, exc_info=True)

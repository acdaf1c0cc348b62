"""The broker's own state, read straight from the Redis structures kombu keeps.

Waiting jobs live in Redis lists, one per queue and message priority: `<queue>` for priority 0
and `<queue>\\x06\\x16<n>` for the other priority steps (kombu's `priority_steps`, 0/3/6/9). A
worker BRPOPs the lists in priority order, so the next job to run is the *right* end of the
first non-empty list. Counting and paging those lists is what makes waiting counts exact and
cheap, with no worker involved. Messages a worker has fetched but not yet acknowledged sit in the
`unacked` hash (delivery tag -> [message, exchange, routing key]) until acked or restored.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from app.core.redis_client import KEY_PREFIX

PRIORITY_STEPS = (0, 3, 6, 9)  # kombu's default; workers consume the lower step first
SEP = "\x06\x16"
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
SCAN_CHUNK = 1000
# Doorbells of app/celery/transport.py: a token per publish wakes an idle consumer; capped, since a
# token only wakes and a full bell wakes as well as an overfull one.
BELL_CAP = 1024


def priority_lists(queue: str) -> list[str]:
    """The Redis keys holding `queue`'s waiting messages, in the order workers consume them."""
    return [queue if p == 0 else f"{queue}{SEP}{p}" for p in PRIORITY_STEPS]


def bell_key(queue: str) -> str:
    """The doorbell list an idle consumer of `queue` waits on (see app/celery/transport.py)."""
    return f"{KEY_PREFIX}bell:{queue}"


def ring_bell(pipe: Any, queue: str) -> None:
    """Add a doorbell token for `queue` to a Redis pipeline: one per message made available."""
    pipe.lpush(bell_key(queue), 1)
    pipe.ltrim(bell_key(queue), 0, BELL_CAP - 1)


@dataclass(frozen=True)
class Message:
    """One broker message, as much of it as the operations API needs."""

    id: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    priority: int
    eta: str | None
    retries: int
    raw: bytes

    def as_job(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "args": self.args,
            "kwargs": self.kwargs,
            "priority": self.priority,
            "eta": self.eta,
            "retries": self.retries,
        }


def parse_message(raw: bytes | str) -> Message | None:
    """Decode a kombu message (JSON envelope, base64 JSON body); None if it is not a task message."""
    try:
        envelope = json.loads(raw)
        headers = envelope.get("headers") or {}
        properties = envelope.get("properties") or {}
        body = envelope.get("body", "")
        if properties.get("body_encoding") == "base64":
            body = base64.b64decode(body)
        decoded = json.loads(body) if body else [[], {}, {}]
        if isinstance(decoded, list) and len(decoded) >= 2:
            args, kwargs = decoded[0], decoded[1]
        else:  # protocol 1 body
            args, kwargs = decoded.get("args", []), decoded.get("kwargs", {})
        task_id = headers.get("id") or (decoded.get("id") if isinstance(decoded, dict) else None)
        if not task_id:
            return None
        return Message(
            id=task_id,
            task=headers.get("task", ""),
            args=list(args or []),
            kwargs=dict(kwargs or {}),
            priority=int(properties.get("priority") or 0),
            eta=headers.get("eta"),
            retries=int(headers.get("retries") or 0),
            raw=raw if isinstance(raw, bytes) else raw.encode(),
        )
    except (ValueError, TypeError, AttributeError, KeyError):
        return None


class Broker:
    """Reads (and, for deletes, edits) the broker's lists. `client` must return bytes."""

    def __init__(self, client: redis.Redis):
        self.r = client

    # ---- counts -------------------------------------------------------------------------------
    def waiting_counts(self, queues: list[str]) -> dict[str, int]:
        """Exact waiting count per queue, every priority list included: one round trip."""
        with self.r.pipeline(transaction=False) as pipe:
            for queue in queues:
                for key in priority_lists(queue):
                    pipe.llen(key)
            lengths = pipe.execute()
        step = len(PRIORITY_STEPS)
        return {q: sum(lengths[i * step : (i + 1) * step]) for i, q in enumerate(queues)}

    # ---- paging ---------------------------------------------------------------------------------
    def page(self, queue: str, offset: int, limit: int) -> tuple[int, list[Message]]:
        """Waiting messages `offset`..`offset+limit` in the order workers will run them, and the
        exact total. Costs one pipeline for the lengths and one LRANGE per list the page touches."""
        keys = priority_lists(queue)
        with self.r.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.llen(key)
            lengths = pipe.execute()
        total = sum(lengths)
        wanted: list[tuple[str, int, int]] = []
        skip, need = offset, limit
        for key, length in zip(keys, lengths):
            if need <= 0:
                break
            if skip >= length:
                skip -= length
                continue
            take = min(need, length - skip)
            # i-th next message of this list is at index -(i+1): the right end is consumed first.
            wanted.append((key, -(skip + take), -(skip + 1)))
            need -= take
            skip = 0
        messages: list[Message] = []
        if wanted:
            with self.r.pipeline(transaction=False) as pipe:
                for key, start, end in wanted:
                    pipe.lrange(key, start, end)
                chunks = pipe.execute()
            for chunk in chunks:
                for raw in reversed(chunk):
                    msg = parse_message(raw)
                    if msg is not None:
                        messages.append(msg)
        return total, messages

    def scan(self, queue: str) -> Iterator[tuple[str, Message]]:
        """Every waiting message of `queue` with the list it is in, oldest first, in chunks (the
        server is never blocked on a long list)."""
        for key in priority_lists(queue):
            length = self.r.llen(key)
            for end in range(length, 0, -SCAN_CHUNK):
                start = max(0, end - SCAN_CHUNK)
                for raw in reversed(self.r.lrange(key, start, end - 1)):
                    msg = parse_message(raw)
                    if msg is not None:
                        yield key, msg

    def find(self, queue: str, job_id: str) -> tuple[str, Message] | None:
        needle = job_id.encode()
        for key in priority_lists(queue):
            length = self.r.llen(key)
            for end in range(length, 0, -SCAN_CHUNK):
                start = max(0, end - SCAN_CHUNK)
                for raw in self.r.lrange(key, start, end - 1):
                    if needle in raw:
                        msg = parse_message(raw)
                        if msg is not None and msg.id == job_id:
                            return key, msg
        return None

    def remove(self, key: str, message: Message) -> bool:
        """Remove exactly this message (byte-identical), nothing else. False if a worker took it
        first."""
        return bool(self.r.lrem(key, 1, message.raw))

    # ---- unacknowledged -----------------------------------------------------------------------------
    def unacked(self) -> Iterator[tuple[str, Message, float | None]]:
        """Messages delivered to a worker and not yet acknowledged: (delivery tag, message,
        delivered at)."""
        for tag, value in self.r.hscan_iter(UNACKED_KEY, count=500):
            try:
                payload = json.loads(value)[0]
            except (ValueError, IndexError, TypeError):
                continue
            msg = parse_message(json.dumps(payload))
            if msg is not None:
                score = self.r.zscore(UNACKED_INDEX_KEY, tag)
                yield tag.decode() if isinstance(tag, bytes) else tag, msg, score

    def ring(self, queues: list[str]) -> None:
        """Wake idle consumers of `queues` at once, for messages put back without a publish."""
        with self.r.pipeline(transaction=False) as pipe:
            for queue in queues:
                ring_bell(pipe, queue)
            pipe.execute()

    def unacked_older_than(self, cutoff: float) -> int:
        return int(self.r.zcount(UNACKED_INDEX_KEY, "-inf", cutoff))

"""Publishing live events, once, from whichever process has them; reading them back in the API.

Transport: one Lua call per event appends it to a capped Redis stream (`STREAM`, trimmed to the
resume window) and PUBLISHes it, with the stream's id, on the broadcaster's pub/sub channel. Pub/sub
gives every API process every event the moment it is published (no consumer group to keep, no polling);
the stream gives each event an ordered id and lets a reconnecting client resume from the last id it saw.

`publish()` never waits on Redis: it validates the payload through its registry model (a producer bug
raises at once, in tests), queues the envelope in process memory and returns. A sender thread writes
queued events in one pipeline per wake-up, through the broadcaster's `LocalBreaker`: while Redis is down
the breaker opens and events are dropped and counted, so a detection or an alert is never slowed or
failed by the live stream. The queue is bounded (VIGIL_WS_PUBLISH_QUEUE); past it the oldest go.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from collections import deque
from typing import Any

import redis

from app.core.redis_client import KEY_PREFIX
from app.core.settings import Settings, get_settings
from app.live.breaker import LocalBreaker
from app.live.registry import EVENT_TYPES, Payload

log = logging.getLogger(__name__)

STREAM = KEY_PREFIX + "live:log"
CHANNEL_KEYS = {"event": KEY_PREFIX + "live:events", "system": KEY_PREFIX + "live:system"}
STATS_KEY = KEY_PREFIX + "live:clients:"  # + pid: a hash each API process refreshes (TTL)
BROADCASTERS = ("event", "system")

# KEYS[1] stream, KEYS[2] channel; ARGV[1] envelope JSON (no id), ARGV[2] oldest id kept (ms), ARGV[3] most kept.
_PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[2], '*', 'm', ARGV[1])
redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[3])
redis.call('PUBLISH', KEYS[2], id .. ' ' .. ARGV[1])
return id
"""


def broadcaster_of(channel: str) -> str:
    """`system` channel events travel on the system broadcaster, everything else on the event one."""
    return "system" if channel == "system" else "event"


def live_client(settings: Settings, timeout: float = 2) -> redis.Redis:
    """A client for the live stream alone: short timeouts and no retries, so an outage is a fast
    failure the breaker counts, not seconds of waiting inside a producer's thread."""
    return redis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=1,
        retry=None,
        health_check_interval=0,
    )


def envelope(event_type: str, payload: dict[str, Any] | Payload, ts: float | None = None) -> tuple[str, str]:
    """(broadcaster, JSON text) of an event; the id is the stream's, added when it is stored."""
    kind = EVENT_TYPES[event_type]
    body = kind.model.model_validate(payload) if isinstance(payload, dict) else payload
    stamp = time.time() if ts is None else ts
    text = json.dumps(
        {
            "type": event_type,
            "channel": kind.channel,
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}Z",
            "payload": body.model_dump(mode="json"),
        },
        separators=(",", ":"),
    )
    return broadcaster_of(kind.channel), text


class Publisher:
    """One per process (reset after a fork): the queue, the sender thread and the two breakers."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.pid = os.getpid()
        self.breakers = {name: LocalBreaker.from_settings(name, settings) for name in BROADCASTERS}
        self.queue: deque[tuple[str, str]] = deque(maxlen=max(1, settings.ws_publish_queue))
        self.cond = threading.Condition()
        self.published = 0
        self.dropped = 0
        self._client: redis.Redis | None = None
        self._script: Any = None
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="vigil-live-publisher", daemon=True)
        self._thread.start()

    def put(self, broadcaster: str, text: str) -> None:
        with self.cond:
            if len(self.queue) == self.queue.maxlen:
                self.dropped += 1
            self.queue.append((broadcaster, text))
            self.cond.notify()

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until everything queued was sent (or dropped); True if it was."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.05))
        return True

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.queue:
                    self.cond.wait()
                batch = list(self.queue)
                self.queue.clear()
                self._busy = True
            try:
                self._send(batch)
            except Exception:  # never let the sender die
                log.exception("live publisher failed")
            finally:
                with self.cond:
                    self._busy = False
                    self.cond.notify_all()

    def _send(self, batch: list[tuple[str, str]]) -> None:
        wanted = {b for b, _ in batch}
        allowed = {b for b in wanted if self.breakers[b].allow()}
        sendable = [(b, t) for b, t in batch if b in allowed]
        self.dropped += len(batch) - len(sendable)
        if not sendable:
            return
        if self._client is None:
            self._client = live_client(self.settings)
            self._script = self._client.register_script(_PUBLISH)
        oldest = str(int((time.time() - self.settings.ws_resume_seconds) * 1000))
        keep = max(1, self.settings.ws_resume_max)  # a busy job pipeline must not grow the stream without bound
        try:
            pipe = self._client.pipeline(transaction=False)
            for b, text in sendable:
                self._script(keys=[STREAM, CHANNEL_KEYS[b]], args=[text, oldest, keep], client=pipe)
            pipe.execute()
        except redis.RedisError as exc:
            for b in allowed:
                self.breakers[b].failure(exc)
            self.dropped += len(sendable)
            self._client = None  # a fresh connection for the next try
            return
        for b in allowed:
            self.breakers[b].success()
        self.published += len(sendable)


_publishers: dict[str, Publisher] = {}
_lock = threading.Lock()


def publisher(settings: Settings | None = None) -> Publisher:
    """This process's publisher for the settings' Redis (a forked child gets its own: the parent's
    thread did not come along). One per Redis URL, so a process serving two stacks (tests) keeps them apart."""
    settings = settings or get_settings()
    current = _publishers.get(settings.redis_url)
    if current is None or current.pid != os.getpid():
        with _lock:
            current = _publishers.get(settings.redis_url)
            if current is None or current.pid != os.getpid():
                current = _publishers[settings.redis_url] = Publisher(settings)
    return current


def publish(event_type: str, payload: dict[str, Any] | Payload, settings: Settings | None = None) -> None:
    """Queue one event for every subscriber. Raises only for a payload its model refuses (a bug)."""
    broadcaster, text = envelope(event_type, payload)
    publisher(settings).put(broadcaster, text)


def publish_quietly(event_type: str, payload: dict[str, Any] | Payload, settings: Settings | None = None) -> None:
    """`publish` for producers whose own work must not fail for the stream's sake: a bad payload is logged."""
    try:
        publish(event_type, payload, settings)
    except Exception:
        log.exception("live event %s not published", event_type)


@atexit.register
def _flush_at_exit() -> None:
    for current in list(_publishers.values()):
        if current.pid == os.getpid():
            current.flush(1.0)


def stream_id(text: str) -> tuple[int, int]:
    """A stream id as a comparable pair; a malformed one sorts first."""
    ms, _, seq = text.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return (-1, -1)


def replay(client: redis.Redis, after: str, limit: int) -> tuple[list[tuple[str, str]], bool]:
    """The stored events after id `after` (at most `limit`), and whether nothing between is missing:
    False when `after` is older than the window (trimmed away) or more than `limit` followed it."""
    entries = client.xrange(STREAM, min="(" + after, max="+", count=limit + 1)
    out = [(entry_id, fields["m"]) for entry_id, fields in entries]
    complete = len(out) <= limit
    out = out[:limit]
    first = client.xrange(STREAM, min="-", max="+", count=1)
    trimmed = bool(first) and stream_id(first[0][0]) > stream_id(after)  # what came between may be gone
    return out, complete and not trimmed

"""Request timings behind the infrastructure figures (API Server latency percentiles, error rate).

Each request appends (time, duration, status, probe) to an in-process buffer: nothing on the request path
touches the network. A daemon thread per process flushes the buffer to one Redis sorted set every
second, so the figures cover every gunicorn process (and every API host), and a window of
`VIGIL_API_LATENCY_WINDOW` seconds is kept. If Redis is away the buffer is dropped, not grown.

Probe answers (health, readiness, metrics) are marked: a readiness probe answers 503 by design
while workers start, and that is the probe's verdict, not an API failure.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque

from app.core.redis_client import KEY_PREFIX, get_redis
from app.core.settings import Settings

log = logging.getLogger(__name__)

SAMPLES_KEY = KEY_PREFIX + "api:timings"
MAX_BUFFER = 10_000


class Sampler:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.buffer: deque[tuple[float, float, int, bool]] = deque(maxlen=MAX_BUFFER)
        self._pid: int | None = None
        self._thread: threading.Thread | None = None

    def add(self, duration_ms: float, status: int, probe: bool = False) -> None:
        if self._pid != os.getpid():  # first request in this (forked) process
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="vigil-api-timings", daemon=True)
            self._thread.start()
        self.buffer.append((time.time(), duration_ms, status, probe))

    def flush(self) -> None:
        items = []
        while self.buffer:
            items.append(self.buffer.popleft())
        if not items:
            return
        pid = os.getpid()
        members = {
            f"{ts:.6f}:{ms:.3f}:{status}:{pid}:{i}:{int(probe)}": ts for i, (ts, ms, status, probe) in enumerate(items)
        }
        try:
            client = get_redis(self.settings)
            with client.pipeline(transaction=False) as pipe:
                pipe.zadd(SAMPLES_KEY, members)
                pipe.zremrangebyscore(SAMPLES_KEY, "-inf", time.time() - self.settings.api_latency_window)
                pipe.execute()
        except Exception:
            log.debug("could not flush API timings", exc_info=True)

    def _run(self) -> None:
        while True:
            time.sleep(1.0)
            self.flush()


def timings(settings: Settings, window: float | None = None) -> list[tuple[float, int, bool]]:
    """(duration ms, status, whether a probe answered) of requests in the last `window` seconds,
    every API process."""
    window = window or settings.api_latency_window
    raw = get_redis(settings).zrangebyscore(SAMPLES_KEY, time.time() - window, "+inf")
    out = []
    for member in raw:
        _ts, ms, status, *rest = member.split(":")
        out.append((float(ms), int(status), rest[2:3] == ["1"]))
    return out

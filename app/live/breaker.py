"""The broadcasters' circuit breakers: in process memory, not in Redis.

The AI services' breakers (app.pipeline.ai.breakers) keep their state in Redis so every process agrees
on it; these guard Redis itself (publishing, and the API's pub/sub subscription), so their state cannot
live there: a breaker that needs Redis to record that Redis is gone never opens. Each process keeps its
own, with the same states, thresholds and settings (VIGIL_BREAKER_*), and the API reports its own
process's in GET /api/system/health/websocket. While one is open, events are dropped (and counted), never
queued behind a dead connection, so producers never wait on Redis.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from app.core.settings import Settings
from app.core.time import iso_utc


class LocalBreaker:
    """closed -> open after `failure_threshold` consecutive failures; open -> half_open once
    `recovery_seconds` passed (the next `allow()` is a trial); half_open -> closed after
    `success_threshold` successes, -> open on any failure."""

    def __init__(self, name: str, failure_threshold: int, recovery_seconds: float, success_threshold: int):
        self.name = name
        self.failure_threshold = max(1, failure_threshold)
        self.recovery_seconds = recovery_seconds
        self.success_threshold = max(1, success_threshold)
        self._lock = threading.Lock()
        self.state = "closed"
        self.failures = 0  # consecutive
        self.total_failures = 0
        self.successes = 0  # in half_open
        self.opened_at = 0.0
        self.last_failure: float | None = None
        self.last_error: str | None = None

    @classmethod
    def from_settings(cls, name: str, settings: Settings) -> LocalBreaker:
        return cls(
            name,
            settings.breaker_failure_threshold,
            settings.breaker_recovery_seconds,
            settings.breaker_success_threshold,
        )

    def allow(self) -> bool:
        with self._lock:
            if self.state == "open":
                if time.monotonic() - self.opened_at < self.recovery_seconds:
                    return False
                self.state, self.successes = "half_open", 0
            return True

    def success(self) -> None:
        with self._lock:
            if self.state == "half_open":
                self.successes += 1
                if self.successes >= self.success_threshold:
                    self.state, self.failures = "closed", 0
            elif self.state == "closed":
                self.failures = 0

    def failure(self, error: BaseException | str) -> None:
        with self._lock:
            self.failures += 1
            self.total_failures += 1
            self.last_failure = time.time()
            self.last_error = (f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error)[:300]
            if self.state == "half_open" or (self.state == "closed" and self.failures >= self.failure_threshold):
                self.state, self.opened_at = "open", time.monotonic()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            state = self.state
            if state == "open" and time.monotonic() - self.opened_at >= self.recovery_seconds:
                state = "half_open"  # what the next call gets, as the AI breakers report it
            return {
                "state": state,
                "failures": self.failures,
                "total_failures": self.total_failures,
                "last_failure": iso_utc(self.last_failure) if self.last_failure else None,
                "last_error": self.last_error,
            }

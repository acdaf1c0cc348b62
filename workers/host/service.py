"""What an in-process service of the service host is: a `run(stop)` loop in its own thread,
supervised by `workers.host.supervisor.ServiceHost` (a return or an exception while it was meant to
run is a crash, restarted with backoff). Most services are a `PeriodicService`: a `tick()` every
`interval` seconds, whose failures are recorded and logged rather than crashing the thread."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any


class Service:
    """An in-process service. `run` blocks until `stop` is set; raising (or returning early) is a crash."""

    name = "service"
    category = "infrastructure"  # services endpoint grouping: infrastructure | ai | monitoring

    def run(self, stop: threading.Event) -> None:
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        """Extra fields for the heartbeat and status reports."""
        return {}


class Throttle:
    """Lets a repeated warning through at most once per `every` seconds, so an outage of an hour
    logs a line a minute rather than one per tick (0 lets every one through)."""

    def __init__(self, every: float = 60.0):
        self.every = every
        self._last: float | None = None

    def ready(self) -> bool:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.every:
            return False
        self._last = now
        return True


class PeriodicService(Service):
    """A service that calls `tick()` every `interval` seconds until stopped.

    A failing tick is not a crash: what it waits for (Redis, the database) comes back by itself, and
    a restart would only count toward `failed`. The failure is kept in `last_error` and `failures`
    (in a row), logged by `warn`, and the next tick tries again. A tick that succeeds clears both.
    """

    warn_every = 60.0  # seconds between two failure warnings; 0 warns on every failure
    failure_warning = "periodic tick failed; will retry"
    first_tick_waits = False  # True: the first tick comes one interval after prepare(), not at once

    def __init__(self, interval: float):
        self.interval = interval
        self.last_error: str | None = None
        self.failures = 0
        self._warnings = Throttle(self.warn_every)

    def tick(self) -> None:
        raise NotImplementedError

    def prepare(self) -> None:
        """Runs in the service's thread before the first tick; raising here is a crash."""

    def finish(self) -> None:
        """Runs in the service's thread when the loop ends, however it ends."""

    def warn(self, exc: Exception) -> None:
        """Log a failed tick (called in its `except`): with the traceback, at most once per `warn_every`."""
        if self._warnings.ready():
            logging.getLogger(type(self).__module__).warning(self.failure_warning, exc_info=True)

    def attempt(self) -> bool:
        """One tick with the failure bookkeeping; False when it failed."""
        try:
            self.tick()
        except Exception as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            self.warn(exc)
            return False
        self.failures, self.last_error = 0, None
        return True

    def run(self, stop: threading.Event) -> None:
        self.prepare()
        try:
            if self.first_tick_waits:
                stop.wait(self.interval)
            while not stop.is_set():
                self.attempt()
                stop.wait(self.interval)
        finally:
            self.finish()

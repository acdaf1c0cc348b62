"""What an in-process service of the service host is: a `run(stop)` loop in its own thread,
supervised by `workers.host.supervisor.ServiceHost` (a return or an exception while it was meant to
run is a crash, restarted with backoff)."""
from __future__ import annotations

import threading
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

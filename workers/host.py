"""The service host: runs Vigil's in-process services (file watcher, monitors) under a supervisor.

`python -m workers.host` is the Procfile's `watcher` process. Each service runs in its own thread;
when one crashes, the supervisor restarts it after 1, 2, 4, 8, 16 seconds, and after five failed
restarts marks it `failed` until someone resets it. A running service publishes a heartbeat under
its own name (`file_watcher@host`), which is how the API knows it is alive.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from app.context import component_var
from app.redis_client import get_redis
from app.services import heartbeats
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)

BACKOFF = (1, 2, 4, 8, 16)
MAX_RESTARTS = len(BACKOFF)


class Service:
    """An in-process service. `run` blocks until `stop` is set; raising means it crashed."""

    name = "service"

    def run(self, stop: threading.Event) -> None:
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        """Extra fields for the heartbeat and status reports."""
        return {}


@dataclass
class ServiceState:
    status: str = "stopped"  # running | stopped | crashed | restarting | failed
    restart_count: int = 0
    last_started_at: float | None = None
    last_crashed_at: float | None = None
    error: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)


class ServiceHost:
    def __init__(self, services: list[Service], settings: Settings | None = None,
                 backoff: tuple[float, ...] = BACKOFF):
        self.settings = settings or get_settings()
        self.services = {s.name: s for s in services}
        self.states = {s.name: ServiceState() for s in services}
        self.backoff = backoff
        self.shutdown = threading.Event()
        self.threads: dict[str, threading.Thread] = {}
        self.redis = get_redis(self.settings)

    def node(self, name: str) -> str:
        return heartbeats.node_name(name)

    # ---- supervision ----------------------------------------------------------------------------
    def start(self) -> None:
        for name in self.services:
            self._spawn(name)
        threading.Thread(target=self._heartbeats, name="service-heartbeats", daemon=True).start()

    def _spawn(self, name: str) -> None:
        thread = threading.Thread(target=self._supervise, args=(name,), name=f"svc-{name}", daemon=True)
        self.threads[name] = thread
        thread.start()

    def _supervise(self, name: str) -> None:
        component_var.set(name)  # this thread's log lines carry the service's name
        service, state = self.services[name], self.states[name]
        while not self.shutdown.is_set() and not state.stop.is_set():
            state.status, state.last_started_at = "running", time.time()
            log.info("service %s running", name)
            try:
                service.run(state.stop)
                if self.shutdown.is_set() or state.stop.is_set():
                    break
                raise RuntimeError("service loop returned without being stopped")
            except Exception as exc:
                state.status, state.last_crashed_at = "crashed", time.time()
                state.error = f"{type(exc).__name__}: {exc}"[:500]
                log.exception("service %s crashed", name)
                self._beat(name)  # withdraw the heartbeat at once
            if state.restart_count >= MAX_RESTARTS:
                state.status = "failed"
                log.error("service %s failed after %d restarts", name, state.restart_count)
                return
            delay = self.backoff[min(state.restart_count, len(self.backoff) - 1)]
            state.restart_count += 1
            state.status = "restarting"
            if self.shutdown.wait(delay) or state.stop.is_set():
                break
        state.status = "stopped"
        self._beat(name)

    # ---- heartbeats ------------------------------------------------------------------------------
    def _beat(self, name: str) -> None:
        state = self.states[name]
        node = self.node(name)
        try:
            if state.status == "running":
                payload = {"kind": "service", "status": state.status, "restart_count": state.restart_count,
                           "started_at": state.last_started_at}
                payload.update(self.services[name].status())
                heartbeats.publish(self.redis, node, payload, self.settings.heartbeat_ttl)
            else:
                heartbeats.remove(self.redis, node)
        except Exception:
            log.debug("heartbeat for %s failed", name, exc_info=True)

    def _heartbeats(self) -> None:
        while not self.shutdown.is_set():
            for name in self.services:
                self._beat(name)
            self.shutdown.wait(self.settings.heartbeat_interval)

    # ---- lifecycle --------------------------------------------------------------------------------
    def stop(self, timeout: float = 10) -> None:
        self.shutdown.set()
        for state in self.states.values():
            state.stop.set()
        for thread in self.threads.values():
            thread.join(timeout)
        for name in self.services:
            try:
                heartbeats.remove(self.redis, self.node(name))
            except Exception:
                pass

    def run_forever(self) -> None:
        def _term(signum, _frame):
            log.info("signal %s: stopping services", signum)
            self.shutdown.set()

        signal.signal(signal.SIGTERM, _term)
        signal.signal(signal.SIGINT, _term)
        self.start()
        while not self.shutdown.wait(0.5):
            pass
        self.stop()


def build_services(settings: Settings) -> list[Service]:
    from workers.batch_closer import BatchCloser
    from workers.infra_monitor import InfraMonitor
    from workers.watcher import FileWatcher

    return [FileWatcher(settings), BatchCloser(settings), InfraMonitor(settings)]


def main() -> None:
    from app.logging_config import configure_logging
    from app.services import metrics
    from app.services.jobs import declare_queues

    settings = get_settings()
    configure_logging(settings.log_level, "watcher", settings)
    metrics.prepare(settings)
    delay = 0.5
    while True:  # the broker may come up after us (honcho starts everything at once)
        try:
            declare_queues()
            break
        except Exception as exc:
            log.warning("broker not reachable yet (%s); retrying in %.1fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10)
    ServiceHost(build_services(settings), settings).run_forever()


if __name__ == "__main__":
    main()

"""Supervision of the in-process services: each `Service` in a thread of its own.

The supervisor watches the threads rather than trusting them to report their own death: a thread
that ends for any reason while it was meant to run (an exception, an injected SystemExit, a
`return`) is a crash, handed to the host's crash policy. A running service publishes a heartbeat
under `<name>@<host>`, withdrawn as soon as its thread is seen to have ended.

stop ends the thread (its `stop` event); start and restart start a new thread once the previous one
has ended, so a service never runs twice at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from app.core.context import component_var
from app.jobs import heartbeats
from workers.host.service import Service
from workers.host.state import Host, Pending, WorkerState

log = logging.getLogger(__name__)


class _Runner:
    """A service's thread; records how it ended."""

    def __init__(self, service: Service):
        self.service = service
        self.stop = threading.Event()
        self.error: str | None = None
        self.thread = threading.Thread(target=self._main, name=f"svc-{service.name}", daemon=True)

    def start(self) -> _Runner:
        self.thread.start()
        return self

    def alive(self) -> bool:
        return self.thread.is_alive()

    def _main(self) -> None:
        component_var.set(self.service.name)  # this thread's log lines carry the service's name
        try:
            self.service.run(self.stop)
            if not self.stop.is_set():
                self.error = "RuntimeError: service loop returned without being stopped"
        except BaseException as exc:
            self.error = f"{type(exc).__name__}: {exc}"[:500]
            if not self.stop.is_set():
                log.error("service %s crashed", self.service.name, exc_info=True)


class ServiceThreads:
    """The `service` kind of supervised worker."""

    def __init__(self, host: Host, services: list[Service]):
        self.host = host
        self.services = {s.name: s for s in services}
        self.runners: dict[str, _Runner] = {}

    # ---- setup and shutdown ----------------------------------------------------------------------
    def create_states(self) -> list[WorkerState]:
        return [
            WorkerState(
                s.name,
                "service",
                getattr(s, "category", "infrastructure"),
                self.host.max_restarts,
                managed_by="service host",
                pid=os.getpid(),
            )
            for s in self.services.values()
        ]

    def restore(self, persisted: dict[str, dict[str, Any]]) -> None:
        """Operator choices (stopped, disabled) survive a restart of the host; a service's own
        restart count starts afresh with the process."""
        for name in self.services:
            old = persisted.get(name)
            if old:
                w = self.host.workers[name]
                w.enabled = bool(old.get("enabled", True))
                w.manual_stop = bool(old.get("manual_stop"))

    def start(self) -> None:
        for name in self.services:
            if not self.host.workers[name].manual_stop:
                self.spawn(name)

    def stop(self) -> None:
        """Ask every thread to end (without waiting)."""
        for runner in self.runners.values():
            runner.stop.set()

    def join(self, timeout: float) -> None:
        for runner in list(self.runners.values()):
            runner.thread.join(timeout)
        for name in self.services:
            w = self.host.workers[name]
            if w.status == "running":
                w.status = "stopped"

    def node_of(self, name: str) -> str:
        return heartbeats.node_name(name)

    def nodes(self) -> list[str]:
        return [self.node_of(name) for name in self.services]

    # ---- threads -----------------------------------------------------------------------------------
    def spawn(self, name: str) -> None:
        w = self.host.workers[name]
        self.runners[name] = _Runner(self.services[name]).start()
        w.status, w.last_started_at, w.next_restart_at, w.pending_start = "running", time.time(), None, False
        log.info("service %s running", name)
        if w.auto_restart:
            w.auto_restart = False
            self.host.history(w, "success", attempt=w.restart_count)
        self.host.changed()

    def observe(self, now: float) -> None:
        """Notice ended threads (a crash unless they were asked to stop); start what is due."""
        for name in self.services:
            w = self.host.workers[name]
            runner = self.runners.get(name)
            if runner is not None and not runner.alive():
                del self.runners[name]
                self._withdraw_heartbeat(name)
                if runner.stop.is_set():
                    if w.status in ("running", "restarting") and not w.pending_start:
                        w.status = "stopped"
                        self.host.changed()
                else:
                    self.host.crashed(w, runner.error or "service thread ended", now)
            if w.pending_start and name not in self.runners and not self.host.shutdown.is_set():
                self.spawn(name)
            elif w.status == "crashed" and w.next_restart_at is not None and now >= w.next_restart_at:
                w.auto_restart = True
                self.spawn(name)

    def _withdraw_heartbeat(self, name: str) -> None:
        try:
            heartbeats.remove(self.host.redis, self.node_of(name))
        except Exception:
            log.debug("heartbeat removal for %s failed", name, exc_info=True)

    def publish(self, ttl: float) -> None:
        """The heartbeat of every running service, with its own `status()` fields."""
        for name, service in self.services.items():
            w = self.host.workers[name]
            runner = self.runners.get(name)
            if w.status == "running" and runner is not None and runner.alive():
                payload = {
                    "kind": "service",
                    "pid": os.getpid(),
                    "status": w.status,
                    "restart_count": w.restart_count,
                    "started_at": w.last_started_at,
                }
                try:
                    payload.update(service.status())
                except Exception:
                    log.debug("status() of %s failed", name, exc_info=True)
                heartbeats.publish(self.host.redis, self.node_of(name), payload, ttl)

    # ---- control ---------------------------------------------------------------------------------------
    def command(self, w: WorkerState, action: str, cmd: dict[str, Any]) -> tuple[int, str] | Pending:
        name = w.name
        runner = self.runners.get(name)
        running = runner is not None and runner.alive() and not runner.stop.is_set()
        if action == "stop":
            if w.status == "stopped" and not running:
                return 400, f"Worker '{name}' is already stopped"
            w.manual_stop, w.next_restart_at, w.pending_start, w.auto_restart = True, None, False, False
            self.host.history(w, "manual", action="stop")
            if runner is not None:
                runner.stop.set()
            else:
                w.status = "stopped"
            return Pending(
                cmd,
                lambda: name not in self.runners and w.status == "stopped",
                f"Worker '{name}' stopped successfully",
                f"Worker '{name}' was asked to stop; its thread has not ended yet",
                acted_on="thread",
            )
        if action in ("start", "restart"):
            if not w.enabled:
                return 400, f"Worker '{name}' is disabled; enable it first"
            if action == "start" and running:
                return 400, f"Worker '{name}' is already running"
            w.manual_stop, w.next_restart_at, w.auto_restart = False, None, False
            self.host.history(w, "manual", action=action)
            if runner is not None:  # restart, or start while a previous thread is still stopping
                runner.stop.set()
                w.pending_start, w.status = True, "restarting"
            else:
                self.spawn(name)
            verb = "started" if action == "start" else "restarted"
            return Pending(
                cmd,
                lambda: self.runners.get(name) not in (None, runner) and w.status == "running",
                f"Worker '{name}' {verb} successfully",
                f"Worker '{name}' {action} requested; its previous thread has not ended yet",
                acted_on="thread",
            )
        return 400, f"Unsupported action '{action}'"

"""Supervision of the processes supervisord runs under `make run`: the `process` side of every supervised worker.

supervisord starts, stops and reaps (autorestart=false); this module turns what it reports into the supervisor's
records and the crash policy's decisions into supervisord calls:

* an exit while the worker was meant to run (supervisord's EXITED or FATAL, seen once per [start, stop]) is a
  crash, handed to the host's policy (`ServiceHost.crashed`): a restart after the backoff, or `failed`;
* a restart that is due is a `startProcess`; whether it landed is decided where the worker's health is known: a
  Celery group's and beat's heartbeats (workers/host/pools.py), supervisord's RUNNING for the API and Flower;
* stop / start / restart commands stop and start the real process (a Celery group is also held, so it stops
  consuming at once, before its warm shutdown ends); the reply says `acted_on: process`;
* what an operator does with `supervisorctl` is adopted, not fought: a stop is an operator stop, a start of a
  stopped or failed worker is an operator start.

A new `make run` (a new supervisord, told apart by the `identifier` scripts/run writes) starts from scratch: every
process the Procfile lists runs, so operator stops, restart counts and `failed` of the previous run are dropped
(queue pauses, which live in Redis, stay). Within one run they survive restarts of the service host.

Not here: the service host itself, which supervisord restarts at once (its new instance records the crash,
`record_own_start`), and Redis, which supervisord restarts at once too.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import xmlrpc.client
from typing import Any

from app.core.redis_client import KEY_PREFIX
from workers.host.procfile import GROUP, HOST_PROCESS
from workers.host.procman import (
    ENDED,
    RUNNING,
    STOPPED,
    UP,
    ProcessInfo,
    ProcessManagerError,
    ShuttingDown,
    Supervisord,
)
from workers.host.service import Throttle
from workers.host.state import Host, Pending, WorkerState

log = logging.getLogger(__name__)

MANAGER_KEY = KEY_PREFIX + "supervisor:manager"  # the identifier of the supervisord the state belongs to
POLL_SECONDS = 0.25
PROBE_TIMEOUT = 0.5
OWN_PROGRAM = "watcher"  # the service host's Procfile name, as supervisord's log calls it
RESTORED = (
    "restart_count",
    "last_started_at",
    "last_crashed_at",
    "error",
    "enabled",
    "manual_stop",
    "exit_seen",
    "next_restart_at",
)
NO_SELF_CONTROL = (
    "the service host is the supervisor: it cannot stop or start itself; supervisord restarts it "
    "when it exits (`supervisorctl restart vigil:watcher`)"
)


def own_state(max_restarts: int, managed_by: str) -> WorkerState:
    """The service host's own record: restarted by its process manager, so nothing here controls it."""
    return WorkerState(
        HOST_PROCESS,
        "process",
        "infrastructure",
        max_restarts,
        controllable=False,
        managed_by=managed_by,
        pid=os.getpid(),
    )


def record_own_start(
    host: Host,
    w: WorkerState,
    old: dict[str, Any] | None,
    now: float,
    reason: str | None = None,
    ended_at: float | None = None,
) -> None:
    """Record that this service host started: a previous instance that did not stop cleanly (its state still says
    `running`, with another pid) crashed, and this start is its restart. `reason` and `ended_at`: how and when it
    ended, where its process manager knows."""
    w.last_started_at = now
    if not old:
        w.status = "running"
        return
    w.restart_count = int(old.get("restart_count") or 0)
    w.last_crashed_at, w.error = old.get("last_crashed_at"), old.get("error")
    if old.get("status") == "running" and old.get("pid") not in (None, os.getpid()):
        started = old.get("last_started_at")
        if started and now - float(started) >= host.settings.supervisor_stable_seconds:
            w.restart_count = 0
        error = f"the service host (pid {old.get('pid')}) ended without a clean shutdown"
        w.error, w.last_crashed_at = (f"{error}: {reason}" if reason else error)[:500], ended_at or now
        log.warning("%s; this is its restart", w.error)
        host.history(w, "crashed", attempt=w.restart_count, error=w.error, at=w.last_crashed_at)
        w.restart_count += 1
        host.history(w, "success", attempt=w.restart_count)
    w.status = "running"


class ManagedProcesses:
    """The supervisord side of the supervised workers that are processes (`make run` only)."""

    def __init__(self, host: Host, manager: Supervisord, programs: dict[str, str]):
        self.host = host
        self.manager = manager
        self.programs = {p: w for p, w in programs.items() if w != HOST_PROCESS}  # `vigil:api` -> `api`
        self.info: dict[str, ProcessInfo] = {}
        self.shutting_down = False
        self.identity: str | None = None
        self.first = True
        self._last_poll = 0.0
        self._stop_at: dict[str, float] = {}  # deferred stops (the API restarting itself answers first)
        self._seen: dict[str, int] = {}  # the pid each program was last seen up with
        self._started: set[str] = set()  # programs Vigil asked supervisord to start, until seen up
        self._live: dict[str, int] = {}  # the same, until its exit is recorded (whose group to kill then)
        self._warnings = Throttle(60.0)

    # ---- setup -----------------------------------------------------------------------------------
    def create_states(self) -> list[WorkerState]:
        """The processes that are no Celery group or beat: the API, Flower, anything else in the Procfile."""
        known = set(self.host.workers)
        return [
            WorkerState(name, "process", "monitoring" if name == "flower" else "infrastructure", self.host.max_restarts)
            for name in self.programs.values()
            if name not in known
        ]

    def attach(self) -> None:
        """Tie each supervised worker to its program; beat becomes controllable (supervisord can start it)."""
        for program, name in self.programs.items():
            w = self.host.workers.get(name)
            if w is None:
                continue
            w.process, w.managed_by = program, "supervisord"
            if w.kind == "beat":
                w.controllable, w.max_restarts = True, self.host.max_restarts

    def restore(self, persisted: dict[str, dict[str, Any]]) -> bool:
        """Within one supervisord's life, carry counts, stops and `failed` across host restarts; a new one (a new
        `make run`) starts everything from scratch. True when the saved state is this supervisord's."""
        try:
            self.identity = self.manager.identification()
            previous = self.host.redis.getset(MANAGER_KEY, self.identity)
        except Exception:
            log.warning("could not tell whether supervisord is the one of the saved state; keeping it", exc_info=True)
            previous = self.identity
        same = previous == self.identity
        for name in self.programs.values():
            w = self.host.workers.get(name)
            if w is None:
                continue
            old = persisted.get(name) or {}
            if same:
                for key in RESTORED:
                    if key in old:
                        setattr(w, key, old[key])
                if old.get("status") in ("crashed", "failed"):
                    w.status = old["status"]
                w.enabled, w.manual_stop = bool(w.enabled), bool(w.manual_stop)
            else:
                w.restart_count, w.manual_stop, w.error, w.next_restart_at, w.exit_seen = 0, False, None, None, None
                w.enabled = bool(old.get("enabled", True))  # like a service's: a choice, not a run's history
                if w.status in ("failed", "crashed", "stopped"):
                    w.status = "stopped"
            if w.manual_stop and w.status != "failed":
                w.status = "stopped"
        return same

    # ---- observation ---------------------------------------------------------------------------------
    def up(self, w: WorkerState) -> bool:
        info = self.info.get(w.process or "")
        return info is not None and info.state in UP

    def observe(self, now: float) -> None:
        if now - self._last_poll < POLL_SECONDS:
            return
        self._last_poll = now
        try:
            self.info = self.manager.processes()
            self.shutting_down = False
        except ShuttingDown:
            self.shutting_down = True  # everything is being stopped on purpose: nothing to record or restart
            return
        except (ProcessManagerError, xmlrpc.client.Fault):
            if self._warnings.ready():
                log.warning("supervisord not answering; process supervision waits", exc_info=True)
            return
        for program, name in self.programs.items():
            w, info = self.host.workers.get(name), self.info.get(program)
            if w is not None and info is not None:
                self._observe(w, info, now)
        self.first = False

    def _observe(self, w: WorkerState, info: ProcessInfo, now: float) -> None:
        before = (w.status, w.pid)
        w.pid = info.pid or None
        if w.name in self._stop_at and now >= self._stop_at[w.name]:
            del self._stop_at[w.name]
            self._call(self.manager.stop, w)
        elif info.state in ENDED:
            self._ended(w, info, now)
        elif info.state == STOPPED:
            self._stopped(w, now)
        elif info.state in UP:
            self._up(w, info, now)
        if (w.status, w.pid) != before:
            self.host.changed()

    def _ended(self, w: WorkerState, info: ProcessInfo, now: float) -> None:
        exit_id = [info.start, info.stop]
        meant_to_run = not w.manual_stop and w.status != "failed"
        if w.exit_seen != exit_id:
            w.exit_seen = exit_id
            pid = self._kill_leftovers(w)
            if meant_to_run:
                how = self.manager.exit_reason(info.program) or info.spawnerr or f"exit status {info.exitstatus}"
                self.host.crashed(w, f"process {info.program}{f' (pid {pid})' if pid else ''} {how}", now)
                return
        if w.pending_start:
            self._start(w, now, auto=False)
        elif w.status == "crashed" and w.enabled and w.next_restart_at is not None and now >= w.next_restart_at:
            self._start(w, now, auto=True)
        elif meant_to_run and w.status not in ("crashed", "restarting") and w.enabled:
            # Seen ended before (by an earlier host) with its restart lost on the way: restart it now.
            w.status, w.next_restart_at = "crashed", now

    def _kill_leftovers(self, w: WorkerState) -> int | None:
        """A process that died by itself can leave its children running: gunicorn's workers keep the API's port
        (and finish their keep-alive connections first), so the restart could not bind it. supervisord puts each
        program in a process group of its own (its pid) and kills the group on a stop (`killasgroup`), but not
        after an exit; this does it then. The group is the dead process's: Linux hands out no pid that is still
        a live group's id, so nothing else can be in it."""
        pid = self._live.pop(w.name, None)  # only the instance just seen up: its pid cannot have been reused yet
        if not pid or pid == os.getpid():
            return pid
        try:
            os.killpg(pid, signal.SIGKILL)
            log.info("killed what was left of %s's process group %d", w.name, pid)
        except (ProcessLookupError, PermissionError):
            pass
        return pid

    def _stopped(self, w: WorkerState, now: float) -> None:
        if w.pending_start:
            self._start(w, now, auto=False)
        elif w.manual_stop or w.status == "failed":
            if w.status != "failed":
                w.status = "stopped"
        elif self.first:
            self._start(w, now, auto=False)  # nobody asked for this stop that we know of: it should run
        elif w.status in ("running", "restarting", "stopped"):
            log.info("%s was stopped outside Vigil (supervisorctl): an operator stop", w.name)
            w.manual_stop, w.status, w.next_restart_at = True, "stopped", None
            self.host.history(w, "manual", action="stop", error="stopped through supervisord, not the API")
            self._hold(w)

    def _up(self, w: WorkerState, info: ProcessInfo, now: float) -> None:
        # A process instance not seen before, while the record says it must not run: someone started it.
        new = w.name in self._seen and self._seen[w.name] != info.pid
        ours = w.name in self._started
        if new or w.name not in self._seen:
            self._started.discard(w.name)
        self._seen[w.name] = self._live[w.name] = info.pid
        if w.manual_stop or w.status == "failed":
            if new:
                log.info("%s was started outside Vigil (supervisorctl): an operator start", w.name)
                if w.status == "failed":
                    w.restart_count, w.error = 0, None
                w.manual_stop, w.next_restart_at, w.auto_restart = False, None, False
                w.status, w.transition_at, w.last_started_at = "restarting", now, now
                self.host.history(w, "manual", action="start", error="started through supervisord, not the API")
                self._hold(w)
            elif self.first and w.manual_stop:
                self._call(self.manager.stop, w)  # stopped by an operator, up again while no host watched
                return
            else:
                return  # a failed Celery group whose pool crashed: up, held until reset
        elif new and not ours:
            # A new instance nobody here started, its stop unseen (`supervisorctl restart`, or a stop and a
            # start between two polls): the operator's stop and start, as if each had been seen.
            log.info("%s was restarted outside Vigil (supervisorctl): an operator stop and start", w.name)
            self.host.history(w, "manual", action="stop", error="stopped through supervisord, not the API")
            self.host.history(w, "manual", action="start", error="started through supervisord, not the API")
        if w.kind == "process":  # no heartbeat: supervisord's RUNNING and an HTTP answer are the evidence
            if info.state == RUNNING and w.status != "running" and self._answers(w):
                w.status = "running"
                if w.last_started_at is None:
                    w.last_started_at = float(info.start)
                if w.auto_restart:
                    w.auto_restart = False
                    self.host.history(w, "success", attempt=w.restart_count)
            elif info.state != RUNNING and w.status == "stopped":
                w.status, w.transition_at = "restarting", now

    def own_exit(self) -> tuple[str | None, float | None]:
        """How and when the previous service host process ended, as supervisord saw it."""
        try:
            info = self.manager.processes().get(f"{GROUP}:{OWN_PROGRAM}")
        except (ProcessManagerError, xmlrpc.client.Fault):
            info = None
        return self.manager.exit_reason(OWN_PROGRAM), (float(info.stop) if info and info.stop else None)

    def _answers(self, w: WorkerState) -> bool:
        """The API and Flower are running once they answer HTTP (any status): supervisord's RUNNING only says the
        process lived `startsecs`, not that it got its port."""
        settings = self.host.settings
        port = {"api": settings.port, "flower": settings.flower_port}.get(w.name)
        if port is None:
            return True
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        try:
            with socket.create_connection((host, port), timeout=PROBE_TIMEOUT) as conn:
                conn.settimeout(PROBE_TIMEOUT)
                conn.sendall(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
                return conn.recv(5) == b"HTTP/"
        except OSError:
            return False

    # ---- acting ------------------------------------------------------------------------------------------
    def _call(self, method: Any, w: WorkerState) -> bool:
        try:
            method(w.process)
            return True
        except ShuttingDown:
            self.shutting_down = True
        except (ProcessManagerError, xmlrpc.client.Fault) as exc:
            log.warning("%s of %s failed: %s", getattr(method, "__name__", "call"), w.name, exc)
            w.error = str(exc)[:500]
        return False

    def _start(self, w: WorkerState, now: float, auto: bool) -> None:
        if self.shutting_down:
            return
        w.pending_start, w.next_restart_at = False, None
        w.status, w.transition_at, w.last_started_at, w.auto_restart = "restarting", now, now, auto
        if auto:
            log.info("restarting %s (restart %d of %d)", w.name, w.restart_count, w.max_restarts)
        self._started.add(w.name)
        self._call(self.manager.start, w)
        self._hold(w)
        self.host.changed()

    def _hold(self, w: WorkerState) -> None:
        self.host.hold(w)

    def reset(self, w: WorkerState) -> None:
        """A `failed` worker runs again: its process is started (a Celery group is released)."""
        self._start(w, time.time(), auto=True)

    def command(self, w: WorkerState, action: str, cmd: dict[str, Any]) -> tuple[Any, ...] | Pending:
        name = w.name
        if self.shutting_down:
            return 503, "supervisord is shutting down (the whole system is stopping)"
        info = self.info.get(w.process or "")
        now = time.time()
        if w.name == "api" and action in ("stop", "start"):
            return 400, (
                "the API cannot be stopped or started through itself (nothing would answer the start); "
                "`supervisorctl stop|start vigil:api`, or restart it through the API"
            )
        if action == "stop":
            if w.manual_stop and not self.up(w):
                return 400, f"Worker '{name}' is already stopped"
            w.manual_stop, w.next_restart_at, w.auto_restart, w.pending_start = True, None, False, False
            if w.status != "failed":
                w.status = "stopped"
            self.host.history(w, "manual", action="stop")
            self._hold(w)
            self._call(self.manager.stop, w)
            return Pending(
                cmd,
                lambda: self._down(w) and w.status in ("stopped", "failed"),
                f"Worker '{name}' stopped successfully (its process has exited)",
                f"Worker '{name}' was told to stop; its process has not exited yet",
                acted_on="process",
            )
        if action not in ("start", "restart"):
            return 400, f"Unsupported action '{action}'"
        if not w.enabled:
            return 400, f"Worker '{name}' is disabled; enable it first"
        if action == "start" and w.status == "running" and not w.manual_stop and self.up(w):
            return 400, f"Worker '{name}' is already running"
        old_pid = info.pid if info else 0
        w.manual_stop, w.next_restart_at, w.auto_restart = False, None, False
        w.status, w.transition_at = "restarting", now
        self.host.history(w, "manual", action=action)
        verb = "started" if action == "start" else "restarted"
        if action == "restart" and (
            self.up(w) or (info is not None and info.state != STOPPED and info.state not in ENDED)
        ):
            w.pending_start = True
            if name == "api":  # answer first: the request asking for it is served by the process to restart
                self._stop_at[name] = now + 0.5
                return 202, "The API restarts after this answer; it is back once /ready answers 200", "process"
            self._hold(w)
            self._call(self.manager.stop, w)
        else:
            self._start(w, now, auto=False)

        def done() -> bool:
            current = self.info.get(w.process or "")
            return (
                current is not None
                and current.state == RUNNING
                and w.status == "running"
                and (action == "start" or current.pid != old_pid)
            )

        return Pending(
            cmd,
            done,
            f"Worker '{name}' {verb} successfully (a new process is running)",
            f"Worker '{name}' {action} requested; its new process is not confirmed yet",
            acted_on="process",
        )

    def _down(self, w: WorkerState) -> bool:
        info = self.info.get(w.process or "")
        return info is None or info.state == STOPPED or info.state in ENDED

"""The service host and worker supervisor (`python -m workers.host`, the Procfile's `watcher`).

One process, three jobs:

* **In-process services** (file watcher, GPU monitor, performance monitor, and any `Service` added
  in `build_services`) each run in their own thread, watched by `workers/host/threads.py`: a thread
  that ends while it was meant to run is a crash.
* **Celery worker groups and beat** are watched through their heartbeats and controlled through
  Celery remote control (`workers/host/pools.py`).
* **Processes** under `make run` (every Procfile process: the API, each Celery group, beat, Flower) are run by
  supervisord with `autorestart=false`; their exits are crashes under the same policy, and its restarts are
  supervisord starts (`workers/host/processes.py`). Under compose the container runtime owns processes.
* **The supervisor loop** (one thread, this module) owns every state change: it takes commands from
  `vigil:supervisor:commands`, applies them, answers on a reply key once the effect is observed,
  publishes every worker's state and its own heartbeat, and writes restart history to SQL. Only
  this thread mutates worker state, so there are no locks to get wrong. In-process services are
  supervised even while Redis or the database is away; only publishing waits for them. The crash
  policy is the same for every kind: a crashed worker is restarted after 1, 2, 4, 8, 16 s
  (`VIGIL_SUPERVISOR_BACKOFF`); after the fifth restart it is `failed` until someone resets it.

Which process supervises what, under `make run` (supervisord) and compose: docs/architecture.md.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from app.core.db import session_scope
from app.core.redis_client import get_redis
from app.core.settings import Settings, get_settings
from app.jobs import heartbeats
from app.live import bus as live
from app.ops.supervisor import (
    COMMAND_MAX_AGE,
    COMMANDS_KEY,
    REPLY_KEY,
    REPLY_TTL,
    STATE_KEY,
    SUPERVISOR_GROUP,
    record_events,
)
from workers.host import procfile
from workers.host.pools import CeleryGroups
from workers.host.processes import OWN_PROGRAM, ManagedProcesses, own_state, record_own_start
from workers.host.procman import Supervisord
from workers.host.service import Service, Throttle
from workers.host.state import Pending, WorkerState
from workers.host.threads import ServiceThreads

log = logging.getLogger(__name__)

OUTBOX_LIMIT = 10_000


class ServiceHost:
    """Runs the services and supervises everything listed in the supervisor endpoints."""

    def __init__(
        self,
        services: list[Service],
        settings: Settings | None = None,
        backoff: tuple[float, ...] | None = None,
        tick: float = 0.1,
    ):
        self.settings = settings or get_settings()
        self.backoff = tuple(backoff) if backoff is not None else self.settings.backoff_seconds
        self.max_restarts = len(self.backoff)
        self.tick_seconds = tick
        self.redis = get_redis(self.settings)
        self.node = heartbeats.node_name(SUPERVISOR_GROUP)
        self.started_at = time.time()
        self.shutdown = threading.Event()
        self.threads = ServiceThreads(self, services)
        self.services = self.threads.services  # the services and their threads by name (the same dicts)
        self.runners = self.threads.runners
        self.workers: dict[str, WorkerState] = {w.name: w for w in self.threads.create_states()}
        self.pools = CeleryGroups(self)
        for state in self.pools.create_states():
            self.workers.setdefault(state.name, state)
        url = self.settings.supervisord_url
        self.processes = ManagedProcesses(self, Supervisord(url), procfile.programs()) if url else None
        if self.processes is not None:
            for state in self.processes.create_states():
                self.workers.setdefault(state.name, state)
            self.processes.attach()
        self.own = own_state(self.max_restarts, "supervisord" if url else "container runtime")
        self.own.process = f"{procfile.GROUP}:{OWN_PROGRAM}" if url else None
        self.workers[self.own.name] = self.own
        self._loop_thread: threading.Thread | None = None
        self._pending: list[Pending] = []
        self._outbox: list[dict[str, Any]] = []
        self._last_live: dict[str, str] = {}  # each worker's last status on the live stream (its `previous`)
        self._dirty = True
        self._last_publish = 0.0
        self._last_observe = 0.0
        self._history_warnings = Throttle(60.0)

    # ---- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        self._restore()
        self.threads.start()
        self._loop_thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)
        self._loop_thread.start()

    def stop(self, timeout: float = 10) -> None:
        self.shutdown.set()
        self.threads.stop()
        if self._loop_thread is not None:
            self._loop_thread.join(timeout)
        self.threads.join(timeout)
        self.own.status = "stopped"  # a clean stop: the next host does not record a crash
        self._flush_history()
        try:
            self._publish(time.time(), force=True)
        except Exception:
            log.debug("final state publish failed", exc_info=True)
        for node in [self.node] + self.threads.nodes():
            try:
                heartbeats.remove(self.redis, node)
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
            if self._loop_thread is not None and not self._loop_thread.is_alive():
                # Without its loop nothing is supervised: exit so the process manager restarts us.
                log.critical("supervisor loop died; exiting for the process manager to restart the host")
                self.stop()
                sys.exit(1)
        self.stop()

    # ---- the loop ------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self.shutdown.is_set():
            command = None
            try:
                popped = self.redis.brpop([COMMANDS_KEY], timeout=self.tick_seconds)
                if popped:
                    command = json.loads(popped[1])
            except Exception:
                log.debug("command poll failed", exc_info=True)
                self.shutdown.wait(self.tick_seconds)
            if command is not None:
                try:
                    self._handle(command)
                except Exception:
                    log.exception("supervisor command %s failed", command)
                    self._reply(command, 500, "supervisor error; see the service host's log")
            try:
                self.tick(time.time())
            except Exception:
                log.exception("supervisor tick failed")

    def tick(self, now: float) -> None:
        self.threads.observe(now)
        if self.processes is not None:  # before the pools: a due process restart is a start, not a release
            try:
                self.processes.observe(now)
            except Exception:
                log.warning("process observation failed", exc_info=True)
        if now - self._last_observe >= min(self.settings.heartbeat_interval / 2, 1.0):
            self._last_observe = now
            try:
                self.pools.observe(now)
            except Exception:
                log.debug("pool observation failed (Redis away?)", exc_info=True)
        self._check_pending(now)
        self._flush_history()
        try:
            self._publish(now)
        except Exception:
            log.debug("state publish failed (Redis away?)", exc_info=True)

    # ---- crash policy (every kind) --------------------------------------------------------------------
    def crashed(self, w: WorkerState, error: str, now: float, node: str | None = None) -> None:
        """Record a crash and decide what happens next: a restart after the backoff, or `failed`."""
        if w.last_started_at and now - w.last_started_at >= self.settings.supervisor_stable_seconds:
            w.restart_count = 0  # it ran fine for a long while: this is not a crash loop
        w.last_crashed_at, w.error, w.auto_restart = now, error[:500], False
        log.warning("worker %s crashed: %s", w.name, error)
        self.history(w, "crashed", attempt=w.restart_count, error=error, node=node, at=now)
        if not w.controllable or w.manual_stop:
            w.status = "crashed" if not w.manual_stop else w.status
        elif not w.enabled:
            w.status, w.next_restart_at = "crashed", None
        elif w.restart_count >= w.max_restarts:
            w.status, w.next_restart_at = "failed", None
            log.error("worker %s failed after %d restarts", w.name, w.restart_count)
            self.history(
                w,
                "failed",
                attempt=w.restart_count,
                error=f"gave up after {w.restart_count} restarts; last error: {error}"[:1000],
                node=node,
                at=now,
            )
        else:
            delay = self.backoff[w.restart_count]
            w.restart_count += 1
            w.status, w.next_restart_at = "crashed", now + delay
        self.changed()
        self.hold(w)

    def hold(self, w: WorkerState) -> None:
        """A Celery group's membership of the stopped set follows its state (held while stopped, crashed, failed)."""
        if w.kind == "celery":
            try:
                self.pools.apply_hold(w)
            except Exception:  # Redis away: the next observation applies it (`held` records only what was done)
                log.debug("hold of %s not applied yet", w.name, exc_info=True)

    def process_up(self, w: WorkerState) -> bool:
        """Whether the worker's process is up, as far as the process manager says (True when none runs it)."""
        return self.processes is None or w.process is None or self.processes.up(w)

    def history(
        self,
        w: WorkerState,
        status: str,
        *,
        attempt: int | None = None,
        error: str | None = None,
        action: str | None = None,
        node: str | None = None,
        at: float | None = None,
    ) -> None:
        event = {
            "worker_name": w.name,
            "timestamp": at or time.time(),
            "status": status,
            "attempt": w.restart_count if attempt is None else attempt,
            "error": error,
            "action": action,
            "node": node,
        }
        if len(self._outbox) < OUTBOX_LIMIT:
            self._outbox.append(event)
        previous, self._last_live[w.name] = self._last_live.get(w.name), status
        live.publish_quietly(
            "worker.status_changed",
            {
                "worker": w.name,
                "status": status,
                "previous": previous,
                "pid": w.pid,
                "message": error or action,
            },
            self.settings,
        )

    def _flush_history(self) -> None:
        if not self._outbox:
            return
        batch = list(self._outbox)
        try:
            with session_scope(self.settings) as session:
                record_events(session, batch)
        except Exception:
            if self._history_warnings.ready():
                log.warning("restart history not written yet (%d pending); retrying", len(batch), exc_info=True)
            return
        del self._outbox[: len(batch)]

    def changed(self) -> None:
        self._dirty = True

    # ---- commands -------------------------------------------------------------------------------------
    def _handle(self, cmd: dict[str, Any]) -> None:
        if time.time() - float(cmd.get("issued_at") or 0) > COMMAND_MAX_AGE:
            log.info("dropping stale supervisor command %s", cmd)
            return
        name, action = cmd.get("worker"), cmd.get("action")
        w = self.workers.get(name or "")
        if w is None:
            self._reply(cmd, 404, f"Unknown worker '{name}'")
            return
        log.info("supervisor command: %s %s (by %s, request %s)", action, name, cmd.get("actor"), cmd.get("request_id"))
        if action == "reset":
            result: Any = self._reset(w)
        elif action in ("enable", "disable"):
            result = self._enable(w, action == "enable")
        elif w is self.own:
            result = (
                400,
                (
                    "the service host is the supervisor: it cannot stop or start itself; its process "
                    "manager restarts it when it exits (`supervisorctl restart vigil:watcher` under make run)"
                ),
            )
        elif w.kind == "service":
            result = self.threads.command(w, action, cmd)
        elif w.process is not None and self.processes is not None:
            result = self.processes.command(w, action, cmd)
        else:
            result = self.pools.command(w, action, cmd)
        self.changed()
        if isinstance(result, Pending):
            self._pending.append(result)
            self._check_pending(time.time())
        else:
            self._reply(cmd, *result)

    def _reset(self, w: WorkerState) -> tuple[int, str] | tuple[int, str, str]:
        if not w.controllable:
            return 400, f"Worker '{w.name}' is not restarted by Vigil; there is no restart count to reset"
        w.restart_count, w.next_restart_at = 0, None
        self.history(w, "manual", action="reset", attempt=0)
        acted_on = ""
        if w.status == "failed":
            w.error = None
            if w.kind == "service":
                w.auto_restart = True
                self.threads.spawn(w.name)
                acted_on = "thread"
            elif w.process is not None and self.processes is not None and not self.processes.up(w):
                self.processes.reset(w)
                acted_on = "process"
            else:
                w.status, w.auto_restart, w.transition_at = "restarting", True, time.time()
                self.pools.restarted(w)
                acted_on = "consumers"
        return 200, f"Worker '{w.name}' restart count reset", acted_on

    def _enable(self, w: WorkerState, enable: bool) -> tuple[int, str]:
        if not w.controllable:
            return 400, f"Worker '{w.name}' is managed by the process manager, not by Vigil"
        w.enabled = enable
        if enable and w.status == "crashed" and w.next_restart_at is None and not w.manual_stop:
            w.next_restart_at = time.time()  # self-healing resumes now
        if not enable:
            w.next_restart_at = None if w.status == "crashed" else w.next_restart_at
        if w.kind == "celery":
            self.pools.restarted(w)
        return 200, f"Service {w.name} {'enabled' if enable else 'disabled'}"

    def _check_pending(self, now: float) -> None:
        keep = []
        for p in self._pending:
            try:
                done = p.done()
            except Exception:
                done = False
            if done:
                self._reply(p.command, 200, p.ok_message, p.acted_on)
            elif now >= float(p.command.get("deadline") or now) - 0.5:
                self._reply(p.command, 202, p.late_message, p.acted_on)
            else:
                keep.append(p)
        self._pending = keep

    def _reply(self, cmd: dict[str, Any], code: int, message: str, acted_on: str = "") -> None:
        w = self.workers.get(cmd.get("worker") or "")
        self._flush_history()  # whoever reads the history after the reply sees the command in it
        try:
            self._write_state()  # whoever reads the state after the reply sees the effect
        except Exception:
            log.debug("state publish failed", exc_info=True)
        body = {
            "id": cmd.get("id"),
            "code": code,
            "message": message,
            "acted_on": acted_on or None,
            "worker": w.snapshot() if w is not None else None,
        }
        key = REPLY_KEY + str(cmd.get("id"))
        try:
            with self.redis.pipeline() as pipe:
                pipe.lpush(key, json.dumps(body, default=str))
                pipe.expire(key, REPLY_TTL)
                pipe.execute()
        except Exception:
            log.warning("could not reply to supervisor command %s", cmd.get("id"), exc_info=True)

    # ---- persistence and publication --------------------------------------------------------------------
    def _restore(self) -> None:
        """Operator choices (stopped, disabled) and pool counters survive a restart of this process."""
        try:
            raw = self.redis.hgetall(STATE_KEY)
        except Exception:
            log.warning("could not read previous supervisor state; starting fresh", exc_info=True)
            record_own_start(self, self.own, None, self.started_at)
            return
        persisted: dict[str, dict[str, Any]] = {}
        for name, value in raw.items():
            try:
                persisted[name] = json.loads(value)
            except ValueError:
                continue
        self.threads.restore(persisted)
        self.pools.restore(persisted)
        own, reason, ended_at = persisted.get(self.own.name), None, None
        if self.processes is not None:
            if not self.processes.restore(persisted):
                own = None  # a new `make run`: this host's first start, not a restart
            reason, ended_at = self.processes.own_exit()
        record_own_start(self, self.own, own, self.started_at, reason, ended_at)
        gone = [name for name in persisted if name not in self.workers]
        if gone:
            try:
                self.redis.hdel(STATE_KEY, *gone)
            except Exception:
                pass

    def _write_state(self) -> None:
        self._dirty = False
        mapping = {name: json.dumps(w.snapshot(), default=str) for name, w in self.workers.items()}
        self.redis.hset(STATE_KEY, mapping=mapping)

    def _publish(self, now: float, force: bool = False) -> None:
        interval = self.settings.heartbeat_interval
        if not (force or self._dirty or now - self._last_publish >= interval):
            return
        beat_due = force or now - self._last_publish >= interval
        self._write_state()
        if not beat_due:
            return
        self._last_publish = now
        ttl = self.settings.heartbeat_ttl
        heartbeats.publish(
            self.redis,
            self.node,
            {"kind": "supervisor", "pid": os.getpid(), "started_at": self.started_at, "workers": len(self.workers)},
            ttl,
        )
        self.threads.publish(ttl)

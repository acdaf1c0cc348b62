"""Supervision of the Celery worker groups and beat, from the heartbeats they publish.

Under compose the container runtime starts and restarts Celery processes, and what the supervisor
controls is whether a group *consumes*, and its pool processes; under `make run` supervisord runs
them and the process side is workers/host/processes.py (stop/start/restart act on the process, a
process exit is the crash), while everything below still holds for consumption and pool processes:

* stop / start: the group goes into (out of) `vigil:workers:stopped`, and `cancel_consumer`
  (`add_consumer`) is broadcast to its nodes without waiting for replies; each worker also
  converges on that set every heartbeat (workers/hooks/bootsteps.py), so a node that missed the broadcast or
  starts later follows within one interval.
* restart: the `vigil_pool_restart` control command replaces every pool process (idle ones at once,
  busy ones after their current job).
* crash: a node whose heartbeat goes stale while it is still in the heartbeat index died without a
  clean shutdown (a clean one removes its heartbeat); a pool process that died abnormally is
  counted by the worker itself (`pool_crashes` in its heartbeat). Either way the group is held
  (not consuming) for the backoff delay and then released, so a job that kills its process cannot
  crash-loop the pool faster than 1, 2, 4, 8, 16 s; after the last delay it stays held (`failed`)
  until someone resets it.

Nothing here calls `celery inspect`: reading state is two Redis calls per tick.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from app.celery.queues import WORKER_GROUPS, group_of
from app.jobs import heartbeats
from app.jobs.queues import STOPPED_GROUPS_KEY, desired_queues, stopped_groups
from workers.host.state import Host, Pending, WorkerState

log = logging.getLogger(__name__)

BEAT = "beat"
CATEGORIES = {
    "detection_worker": "ai",
    "analysis_worker": "ai",
    "notification_worker": "infrastructure",
    "cleanup_service": "infrastructure",
    BEAT: "infrastructure",
}


@dataclass
class _Track:
    """One worker process instance (node name + pid + start time) as last seen."""

    ident: tuple[Any, Any]
    crashes: int
    alive: bool = True


class CeleryGroups:
    """The `celery` and `beat` kinds of supervised worker."""

    def __init__(self, host: Host):
        self.host = host
        self.settings = host.settings
        self.client = host.redis
        self.tracks: dict[str, _Track] = {}
        self.beats: dict[str, list[dict[str, Any]]] = {}
        self.held: dict[str, bool] = {}
        self.first = True
        self._app: Any = None

    @property
    def app(self) -> Any:
        """The Celery app for this supervisor's broker. Remote control publishes through the app's
        own producer pool whatever connection is passed, so another broker needs another app."""
        if self._app is None:
            from app.celery.app import celery, create_celery

            same = celery.conf.broker_url == self.settings.broker_url
            self._app = celery if same else create_celery(self.settings)
        return self._app

    # ---- setup -----------------------------------------------------------------------------------
    def create_states(self) -> list[WorkerState]:
        states = [
            WorkerState(name, "celery", CATEGORIES.get(name, "infrastructure"), self.host.max_restarts)
            for name in WORKER_GROUPS
        ]
        states.append(WorkerState(BEAT, "beat", CATEGORIES[BEAT], 0, controllable=False))
        return states

    def restore(self, persisted: dict[str, dict[str, Any]]) -> None:
        """Carry a group's counters, failed state and operator stop across supervisor restarts."""
        try:
            stopped = stopped_groups(self.client)
        except Exception:
            stopped = set()
        for name in WORKER_GROUPS:
            w = self.host.workers[name]
            old = persisted.get(name)
            if old:
                w.restart_count = int(old.get("restart_count") or 0)
                w.last_started_at = old.get("last_started_at")
                w.last_crashed_at = old.get("last_crashed_at")
                w.error = old.get("error")
                w.enabled = bool(old.get("enabled", True))
                w.manual_stop = bool(old.get("manual_stop"))
                if old.get("status") == "failed":
                    w.status = "failed"
            elif name in stopped:
                w.manual_stop = True  # stopped before any supervisor state existed: respect it
            if w.manual_stop and w.status != "failed":
                w.status = "stopped"

    # ---- observation ---------------------------------------------------------------------------------
    def observe(self, now: float) -> None:
        ttl = self.settings.heartbeat_ttl
        beats = heartbeats.alive(self.client, ttl)
        index = heartbeats.last_seen(self.client)
        alive: dict[str, dict[str, Any]] = {}
        for beat in beats:
            node = beat.get("node", "")
            if group_of(node) in WORKER_GROUPS or group_of(node) == BEAT:
                alive[node] = beat
        self.beats = heartbeats.by_group(list(alive.values()))
        for node, beat in alive.items():
            w = self.host.workers[group_of(node)]
            ident = (beat.get("pid"), beat.get("started_at"))
            crashes = int(beat.get("pool_crashes") or 0)
            track = self.tracks.get(node)
            if track is None or track.ident != ident:
                # A managed process's exit is reported by supervisord (processes.py), not guessed from here.
                if track is not None and track.alive and not self.first and w.process is None:
                    self.host.crashed(
                        w,
                        f"{node} was replaced (pid {track.ident[0]} -> {ident[0]}) without a clean shutdown",
                        now,
                        node,
                    )
                self.tracks[node] = _Track(ident, crashes)
                continue
            track.alive = True
            if crashes > track.crashes:
                last = beat.get("last_pool_crash") or {}
                count = crashes - track.crashes
                what = f"pool process {last.get('pid')}" if count == 1 else f"{count} pool processes"
                self.host.crashed(w, f"{what} of {node} exited with {last.get('status', 'an error')}", now, node)
                track.crashes = crashes
        for node, track in list(self.tracks.items()):
            if node in alive:
                continue
            if track.alive:
                track.alive = False
                w = self.host.workers[group_of(node)]
                if node in index and w.process is None:  # indexed but silent: it died without removing its beat
                    age = now - index[node]
                    self.host.crashed(w, f"no heartbeat from {node} (pid {track.ident[0]}) for {age:.0f}s", now, node)
            if node not in index:
                del self.tracks[node]
        self.first = False
        for name in list(WORKER_GROUPS) + [BEAT]:
            self.settle(self.host.workers[name], now)

    def nodes(self, name: str) -> list[dict[str, Any]]:
        return self.beats.get(name, [])

    def settle(self, w: WorkerState, now: float) -> None:
        """Derive the status from what was observed; release a held group when its backoff ends."""
        nodes = self.nodes(w.name)
        w.nodes = sorted(b["node"] for b in nodes)
        if w.process is None:
            w.pid = nodes[0].get("pid") if len(nodes) == 1 else None
        before = w.status
        if w.kind == BEAT and w.process is None:
            if nodes and w.status != "running":
                if w.status == "crashed":
                    w.restart_count += 1
                    self.host.history(w, "success", attempt=w.restart_count)
                w.status, w.last_started_at = "running", min(b.get("started_at") or now for b in nodes)
            elif not nodes and w.status == "running":
                w.status = "stopped"
        elif w.status == "failed" or w.manual_stop:
            pass
        elif w.status == "crashed":
            if not self.host.process_up(w):
                pass  # its process exited: processes.py starts a new one when the backoff ends
            elif w.next_restart_at is not None and now >= w.next_restart_at:
                w.next_restart_at, w.status, w.auto_restart, w.transition_at = None, "restarting", True, now
                if not nodes:
                    w.error = f"{w.error} (waiting for the process manager to start a new process)"
        elif w.status == "restarting":
            since = w.transition_at or 0
            if nodes and all(
                (b.get("ts") or 0) > since and (w.kind == BEAT or self._consumes_as_desired(b)) for b in nodes
            ):
                w.status = "running"
                if w.process is None:  # a managed process's start is when supervisord was told to start it
                    w.last_started_at = now
                if w.auto_restart:
                    w.auto_restart = False
                    self.host.history(w, "success", attempt=w.restart_count)
        elif w.status == "running":
            if not nodes:
                w.status = "stopped"
        elif w.status == "stopped":
            if nodes:
                w.status = "running"
                w.last_started_at = min(b.get("started_at") or now for b in nodes)
        if w.status != before:
            self.host.changed()
        if w.kind != BEAT:
            self.apply_hold(w)

    def _consumes_as_desired(self, beat: dict[str, Any]) -> bool:
        want = desired_queues(self.client, group_of(beat["node"]), list(WORKER_GROUPS[group_of(beat["node"])]))
        return set(beat.get("queues") or []) == set(want)

    # ---- control ---------------------------------------------------------------------------------------
    def should_hold(self, w: WorkerState) -> bool:
        return w.manual_stop or w.status in ("failed", "crashed")

    def apply_hold(self, w: WorkerState, force: bool = False) -> None:
        """Make the group's membership of the stopped set (and its consumers) match its state."""
        want = self.should_hold(w)
        if not force and self.held.get(w.name) == want:
            return
        queues = list(WORKER_GROUPS[w.name])
        if want:
            self.client.sadd(STOPPED_GROUPS_KEY, w.name)
            self.broadcast("cancel_consumer", w.name, queues)
        else:
            self.client.srem(STOPPED_GROUPS_KEY, w.name)
            self.broadcast("add_consumer", w.name, desired_queues(self.client, w.name, queues))
        self.held[w.name] = want

    def broadcast(self, command: str, name: str, queues: list[str] | None = None) -> None:
        """Fire-and-forget remote control to the group's live nodes (never waits for replies)."""
        destination = [b["node"] for b in self.nodes(name)]
        if not destination:
            return
        control = self.app.control
        try:
            if queues is None:
                control.broadcast(command, destination=destination, reply=False)
            for queue in queues or []:
                control.broadcast(command, arguments={"queue": queue}, destination=destination, reply=False)
        except Exception:  # the workers converge on the stopped set within a heartbeat anyway
            log.warning("broadcast %s to %s failed", command, destination, exc_info=True)

    def command(self, w: WorkerState, action: str, cmd: dict[str, Any]) -> tuple[int, str] | Pending:
        name = w.name
        if w.kind == BEAT:
            return 400, (
                "beat is started and stopped by its process manager here (the container runtime's restart "
                "policy), not by the Vigil supervisor; under `make run` supervisord runs it and this works"
            )
        nodes = self.nodes(name)
        now = time.time()
        if action == "stop":
            if w.manual_stop:
                return 400, f"Worker '{name}' is already stopped"
            w.manual_stop, w.next_restart_at, w.auto_restart = True, None, False
            if w.status != "failed":
                w.status = "stopped"
            self.host.history(w, "manual", action="stop")
            self.apply_hold(w, force=True)
            return Pending(
                cmd,
                lambda: self._all_fresh(name, now, lambda b: not b.get("queues")),
                f"Worker '{name}' stopped successfully",
                f"Worker '{name}' told to stop consuming; not every node has confirmed yet",
                acted_on="consumers",
            )
        if action in ("start", "restart"):
            if not w.enabled:
                return 400, f"Worker '{name}' is disabled; enable it first"
            if action == "start" and w.status == "running" and not w.manual_stop:
                return 400, f"Worker '{name}' is already running"
            if not nodes:
                return 400, (
                    f"Worker '{name}' has no running process to {action}; its processes are started "
                    f"by the container runtime (compose), not by Vigil"
                )
            old_pids = {pid for b in nodes for pid in b.get("pool_pids") or []}
            w.manual_stop, w.next_restart_at, w.auto_restart = False, None, False
            w.status, w.transition_at = "restarting", now
            self.host.history(w, "manual", action=action)
            self.apply_hold(w, force=True)
            if action == "restart":
                self.broadcast("vigil_pool_restart", name)

            def done() -> bool:
                if not self._all_fresh(name, now, self._consumes_as_desired):
                    return False
                pids = {p for b in self.nodes(name) for p in b.get("pool_pids") or []}
                return action == "start" or not (pids & old_pids)

            verb = "started" if action == "start" else "restarted"
            return Pending(
                cmd,
                done,
                f"Worker '{name}' {verb} successfully",
                f"Worker '{name}' {action} requested; busy pool processes are replaced after their current job"
                if action == "restart"
                else f"Worker '{name}' told to consume again; not every node has confirmed yet",
                acted_on="pool" if action == "restart" else "consumers",
            )
        return 400, f"Unsupported action '{action}'"

    def _all_fresh(self, name: str, since: float, check: Any) -> bool:
        """Every live node has beaten since `since` (so its beat reflects the change) and passes `check`."""
        return all((b.get("ts") or 0) > since and check(b) for b in self.nodes(name))

    def restarted(self, w: WorkerState) -> None:
        """Hook for reset/enable: the group's hold follows its new state at once."""
        self.apply_hold(w)

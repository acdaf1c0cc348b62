"""Bootsteps and lifecycle hooks that make every Celery process report to Vigil.

* `VigilConsumer` (consumer blueprint): publishes the worker's heartbeat from the worker's own
  event loop and converges the queues it consumes on the persisted pause/stop state. The heartbeat
  also counts pool processes that died abnormally (SIGKILL, OOM, segfault), which billiard replaces
  silently; the supervisor turns that count into crash records (workers/host/pools.py).
* `VigilWorker` (worker blueprint): runs the registry archiver thread (Redis -> SQL).
* beat publishes a heartbeat from a thread.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
from typing import Any

from celery import bootsteps, signals
from celery.worker import state as worker_state
from celery.worker.control import control_command, ok

from app.celery.broker import Broker
from app.celery.queues import group_of
from app.core.redis_client import get_broker_redis, get_redis
from app.core.settings import get_settings
from app.jobs import heartbeats
from app.jobs.pools import converge_pool, desired_concurrency
from app.jobs.queues import desired_queues
from app.jobs.recovery import restore_orphans
from app.jobs.registry import get_registry

log = logging.getLogger(__name__)

HELD_LIMIT = 1000


class VigilConsumer(bootsteps.StartStopStep):
    requires = {"celery.worker.consumer.tasks:Tasks"}
    label = "VigilConsumer"

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.tref = None
        self.assigned: list[str] = []
        self.started_at = time.time()

    def start(self, c: Any) -> None:
        settings = get_settings()
        if not self.assigned:  # first start: remember what -Q gave us, before any pause applies
            self.assigned = [q.name for q in c.task_consumer.queues]
        # Runs before the event loop fetches anything, so a paused queue is never read here.
        self.tick(c)
        self.tref = c.timer.call_repeatedly(settings.heartbeat_interval, self.tick, (c,), priority=10)

    def stop(self, c: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        try:
            heartbeats.remove(get_redis(), c.hostname)
        except Exception:
            log.debug("could not remove heartbeat", exc_info=True)

    shutdown = stop

    def tick(self, c: Any) -> None:
        try:
            self.converge(c)
            self.scale(c)
            self.beat(c)
            self.rescue(c)
        except Exception:
            log.warning("heartbeat/queue sync failed", exc_info=True)

    def rescue(self, c: Any) -> None:
        """Give a dead worker's unacknowledged jobs back to the queue (app/jobs/recovery.py)."""
        settings = get_settings()
        restore_orphans(
            c.connection.default_channel,
            Broker(get_broker_redis(settings)),
            get_redis(settings),
            get_registry(),
            settings.heartbeat_ttl,
        )

    def converge(self, c: Any) -> None:
        if c.task_consumer is None:
            return
        want = desired_queues(get_redis(), group_of(c.hostname), self.assigned)
        have = [q.name for q in c.task_consumer.queues]
        for name in have:
            if name not in want:
                c.cancel_task_queue(name)
        for name in want:
            if name not in have:
                c.add_task_queue(name)

    def scale(self, c: Any) -> None:
        """Converge the pool on the group's persisted process count (app/jobs/pools.py), if one is set.
        A failure here must not cost the heartbeat that follows."""
        pool = getattr(c, "pool", None)
        if pool is not None:
            try:
                converge_pool(pool, desired_concurrency(get_redis(), group_of(c.hostname)))
            except Exception:
                log.warning("pool scale convergence failed", exc_info=True)

    def beat(self, c: Any) -> None:
        settings = get_settings()
        pool = getattr(c, "pool", None)
        POOL_EXITS.watch(pool)  # normally already done in VigilWorker.register_with_event_loop
        # Every message this worker holds unacknowledged (running, prefetched, ETA-scheduled):
        # what the dead-worker sweep must not touch.
        held = list({r.id for r in list(worker_state.reserved_requests) + list(worker_state.active_requests)})
        heartbeats.publish(
            get_redis(),
            c.hostname,
            {
                "kind": "celery",
                "pid": os.getpid(),
                "started_at": self.started_at,
                "queues": [q.name for q in c.task_consumer.queues] if c.task_consumer else [],
                "assigned_queues": self.assigned,
                "concurrency": getattr(pool, "num_processes", None) or getattr(c, "initial_prefetch_count", None),
                "pool_pids": _pool_pids(pool),
                "active": len(worker_state.active_requests),
                "reserved": len(worker_state.reserved_requests),
                "active_ids": [r.id for r in list(worker_state.active_requests)][:100],
                "held_ids": held[:HELD_LIMIT],
                "held_truncated": len(held) > HELD_LIMIT,
                "processed": sum(worker_state.total_count.values()),
                "pool_crashes": POOL_EXITS.count,
                "last_pool_crash": POOL_EXITS.last,
            },
            settings.heartbeat_ttl,
        )


class PoolExits:
    """Counts pool processes that exited abnormally in this worker.

    billiard replaces a dead pool process at once, so from outside the only trace is a new pid; a pid
    change alone cannot tell a crash from a recycle (`--max-tasks-per-child`) or a pool restart. The
    pool's own exit handler can: it sees the exit code and whether the exit was requested.
    """

    def __init__(self) -> None:
        self.count = 0
        self.last: dict[str, Any] | None = None

    def watch(self, pool: Any) -> None:
        inner = getattr(pool, "_pool", None)
        original = getattr(inner, "on_process_down", None)
        if inner is None or original is None or getattr(original, "_vigil", False):
            return
        from billiard.common import human_status
        from billiard.pool import EX_OK, EX_RECYCLE

        def on_process_down(proc: Any) -> Any:
            try:
                code = proc.exitcode
                if code not in (EX_OK, EX_RECYCLE, None) and not getattr(proc, "_controlled_termination", False):
                    self.count += 1
                    self.last = {"pid": proc.pid, "exitcode": code, "status": human_status(code), "at": time.time()}
            except Exception:
                log.debug("could not read pool process exit", exc_info=True)
            return original(proc)

        on_process_down._vigil = True  # type: ignore[attr-defined]
        inner.on_process_down = on_process_down


POOL_EXITS = PoolExits()


def _pool_pids(pool: Any) -> list[int]:
    try:
        return [int(p.pid) for p in pool._pool._pool]  # prefork pool processes
    except Exception:
        return []


class VigilWorker(bootsteps.StartStopStep):
    label = "VigilWorker"

    def register_with_event_loop(self, w: Any, hub: Any) -> None:
        # The pool installs its process-exit handler in its own registration, which runs after this
        # one (steps register in reverse order); wrap it on the loop's first iteration, before the
        # first poll, so a pool process killed in the worker's first moments is counted too.
        hub.call_soon(POOL_EXITS.watch, w.pool)


@control_command()
def vigil_pool_restart(state: Any, **_: Any) -> dict[str, Any]:
    """Replace every pool process: idle ones at once, busy ones as soon as their current job ends.

    Celery's own `pool_restart` only flags the processes, and an idle one notices the flag when it
    is next given a job, so a quiet pool keeps its old processes indefinitely. Idle processes are
    retired here the way autoscale retires them (a controlled stop, then the pool grows back), and
    busy ones get the restart flag (needs `worker_pool_restarts`) so no running job is cut short.
    """
    pool = state.consumer.pool
    inner = getattr(pool, "_pool", None)
    if inner is None:
        raise ValueError("this worker's pool cannot be restarted")
    idle = list(inner._iterinactive())
    busy = [proc for proc in inner._pool if proc not in idle]
    for proc in busy:
        flag = inner._poolctrl.get(proc.pid)
        if flag is not None:
            flag.set()
    if idle:
        pool.shrink(len(idle))
        pool.grow(len(idle))
    return ok(f"replacing {len(idle)} idle process(es) now and {len(busy)} busy one(s) after their job")


@control_command(args=[("processes", int)], signature="<processes>")
def vigil_pool_scale(state: Any, processes: int, **_: Any) -> dict[str, Any]:
    """Set the pool's process count to `processes` (grow or shrink by the difference): absolute, so it
    and the heartbeat's convergence on the persisted count never add up (app/jobs/pools.py)."""
    pool = state.consumer.pool
    change = converge_pool(pool, int(processes))
    return ok(f"pool at {getattr(pool, 'num_processes', '?')} process(es) ({change:+d})")


def install(app: Any) -> None:
    app.steps["consumer"].add(VigilConsumer)
    app.steps["worker"].add(VigilWorker)


@signals.beat_init.connect(weak=False)
def _beat_init(sender: Any = None, **_: Any) -> None:
    settings = get_settings()
    hb = heartbeats.HeartbeatThread(
        get_redis(),
        heartbeats.node_name("beat"),
        settings.heartbeat_interval,
        settings.heartbeat_ttl,
        lambda: {"kind": "beat"},
    ).start()
    atexit.register(hb.stop)

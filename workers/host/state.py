"""The supervisor's records: one `WorkerState` per supervised worker, and the `Pending` reply of
a command whose effect is still to be observed. Plain data, shared by the host, its service threads
and its pools."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import redis

from app.core.settings import Settings


@dataclass
class WorkerState:
    """One supervised worker: an in-process service, a Celery worker group, beat, or a process of its own (the API,
    Flower, the service host)."""

    name: str
    kind: str  # service | celery | beat | process
    category: str
    max_restarts: int
    controllable: bool = True
    status: str = "stopped"  # running | stopped | crashed | restarting | failed
    restart_count: int = 0
    last_started_at: float | None = None
    last_crashed_at: float | None = None
    error: str | None = None
    enabled: bool = True  # disabled: crashes are recorded but not restarted automatically
    manual_stop: bool = False  # stopped by an operator; stays stopped until started
    next_restart_at: float | None = None
    auto_restart: bool = False  # the restart under way is the supervisor's own (records `success`)
    pending_start: bool = False  # a service to start again once its stopping thread has ended
    transition_at: float | None = None  # when the current restart began (a pool's beats must be newer)
    nodes: list[str] = field(default_factory=list)
    process: str | None = None  # its supervisord program (`vigil:detection`) when supervisord runs it
    managed_by: str = "container runtime"  # who starts its process: supervisord | container runtime | service host
    pid: int | None = None  # its process (a service: the host's), where one is known
    exit_seen: list[int] | None = None  # supervisord's [start, stop] of the last exit already recorded

    def snapshot(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Pending:
    """A command whose reply waits until `done()` (or its deadline)."""

    command: dict[str, Any]
    done: Callable[[], bool]
    ok_message: str
    late_message: str
    acted_on: str = ""  # process | consumers | pool | thread: what the command changed


class Host(Protocol):
    """What the kinds of worker (service threads, Celery pools) need of the service host that owns
    them (`ServiceHost`): they report crashes and history through it, and only the host's loop
    mutates worker state."""

    settings: Settings
    redis: redis.Redis
    max_restarts: int
    workers: dict[str, WorkerState]
    shutdown: threading.Event

    def crashed(self, w: WorkerState, error: str, now: float, node: str | None = None) -> None: ...

    def process_up(self, w: WorkerState) -> bool: ...

    def hold(self, w: WorkerState) -> None: ...

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
    ) -> None: ...

    def changed(self) -> None: ...

"""The named queues and the worker groups that consume them: the one definition both the API and
the workers use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QueueSpec:
    name: str
    family: str
    priority: str  # "high" | "normal"


QUEUES: tuple[QueueSpec, ...] = (
    QueueSpec("detection:high", "detection", "high"),
    QueueSpec("detection", "detection", "normal"),
    QueueSpec("analysis", "analysis", "normal"),
    QueueSpec("notification:high", "notification", "high"),
    QueueSpec("notification", "notification", "normal"),
    QueueSpec("cleanup", "cleanup", "normal"),
)
QUEUE_NAMES: tuple[str, ...] = tuple(q.name for q in QUEUES)
QUEUES_BY_NAME: dict[str, QueueSpec] = {q.name: q for q in QUEUES}

# Worker group (Celery node name prefix) -> queues it consumes, high priority first. The names are
# the supervisor's worker names (System Monitoring guide), so a node `detection_worker@host` is that worker.
WORKER_GROUPS: dict[str, tuple[str, ...]] = {
    "detection_worker": ("detection:high", "detection"),
    "analysis_worker": ("analysis",),
    "notification_worker": ("notification:high", "notification"),
    "cleanup_service": ("cleanup",),
}

# Task families routed by task-name prefix; `priority="high"` picks the family's `:high` queue.
FAMILIES: tuple[str, ...] = ("detection", "analysis", "notification", "cleanup")


def queue_for(family: str, priority: str = "normal") -> str:
    """The queue a task of `family` goes to at `priority`."""
    if priority == "high" and f"{family}:high" in QUEUES_BY_NAME:
        return f"{family}:high"
    return family


def group_of(node: str) -> str:
    """Worker group of a node name (`detection_worker@host` -> `detection_worker`)."""
    return node.split("@", 1)[0]

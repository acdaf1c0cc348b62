"""The Celery configuration: queues, routing, reliability settings, beat schedule.

Every choice here is explained in docs/architecture.md ("Celery topology"); the short version:
JSON only; acks late + reject on worker loss so a killed worker's job is re-run, not lost;
prefetch 1 so a long detection never holds a second message hostage; strict queue priority so
`:high` queues drain first; a visibility timeout longer than the longest job can be held, retry
countdowns included (`RETRY_COUNTDOWN_MAX`).
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab
from kombu import Exchange, Queue

from app.celery.queues import FAMILIES, QUEUE_NAMES
from app.core.settings import Settings

# Loaded by the worker at start-up (Celery `include`), named as strings so the app itself never
# imports the workers package.
TASK_MODULES = (
    "workers.tasks.detection",
    "workers.tasks.analysis",
    "workers.tasks.notification",
    "workers.tasks.cleanup",
    "workers.tasks.system",
    "workers.tasks.exports",
)

EXCHANGE = Exchange("vigil", type="direct", durable=True)

# The longest countdown any task retry waits, in seconds: every task's `retry_backoff_max` and every
# explicit countdown (an open breaker's `retry_after`, the analysis's failed alert hand-over) is
# capped by it. A message waiting out its countdown is an ETA message a worker holds unacknowledged,
# so this is one term of the visibility timeout's budget (docs/architecture.md, "Visibility
# timeout"): the longest hard time limit (600 s) + a reserved message's wait behind it (600 s) + this
# (300 s) = 1500 s, under the 1800 s default.
# Raising it means raising VIGIL_VISIBILITY_TIMEOUT too, or a retried job runs twice.
RETRY_COUNTDOWN_MAX = 300


def route_task(name: str, args: Any, kwargs: Any, options: dict[str, Any], task: Any = None, **kw: Any):
    """Route by task name: `vigil.<family>.<task>` goes to the family's normal queue.

    Only the queue is named: its routing key comes from the Queue declaration, so a caller's
    explicit `queue="<family>:high"` can never be paired with another queue's routing key (kombu
    drops a message whose routing key has no binding, silently).
    """
    parts = name.split(".")
    if len(parts) >= 3 and parts[0] == "vigil" and parts[1] in FAMILIES:
        return {"queue": parts[1]}
    return {"queue": "cleanup"}


def _cleanup_schedule(settings: Settings) -> crontab:
    hour, _, minute = settings.cleanup_time.partition(":")
    return crontab(hour=int(hour), minute=int(minute or 0))


def build_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.broker_url,
        # Class path + URL (Celery's `<backend>+<url>` form): see app/celery/result_backend.py.
        "result_backend": f"app.celery.result_backend:RedisBackend+{settings.result_backend}",
        # --- serialisation: JSON only, nothing executable on the wire -------------------------
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # --- topology ----------------------------------------------------------------------------
        "task_queues": [Queue(name, EXCHANGE, routing_key=name, durable=True) for name in QUEUE_NAMES],
        "task_default_queue": "cleanup",
        "task_default_exchange": EXCHANGE.name,
        "task_default_routing_key": "cleanup",
        "task_create_missing_queues": False,
        "task_routes": (route_task,),
        # --- reliability ------------------------------------------------------------------------
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # The registry records starts and results (durably, listably); Celery's own STARTED and
        # result writes would repeat that for every job. The backend stays configured for callers
        # that want `AsyncResult.get()`: they set `ignore_result=False` on their task.
        "task_track_started": False,
        "task_ignore_result": True,
        "task_publish_retry": True,
        "task_publish_retry_policy": {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2},
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            "unacked_restore_interval": settings.unacked_restore_interval,
            "unacked_restore_throttle": 1,
            # Strict order: BRPOP lists `detection:high` before `detection` every time.
            "queue_order_strategy": "priority",
            "health_check_interval": 25,
        },
        "result_backend_transport_options": {"retry_policy": {"timeout": 5.0}},
        "result_expires": settings.result_expires,
        "result_extended": True,
        # --- limits: soft raises inside the task, hard kills the child ----------------------------
        "task_soft_time_limit": 240,
        "task_time_limit": 300,
        # --- supervisor: `restart` of a worker group is Celery's pool_restart (workers/host/pools.py) ----
        "worker_pool_restarts": True,
        # --- events (Flower) ----------------------------------------------------------------------
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        # --- beat -----------------------------------------------------------------------------------
        "timezone": "UTC",
        "beat_schedule_filename": str(settings.var_dir / "celerybeat-schedule"),
        "beat_schedule": {
            "cleanup-daily": {
                "task": "vigil.cleanup.run",
                "schedule": _cleanup_schedule(settings),
                "kwargs": {"trigger": "beat"},
            },
            "registry-trim": {"task": "vigil.cleanup.trim_registry", "schedule": 600.0},
            "purge-exports": {"task": "vigil.cleanup.purge_exports", "schedule": 3600.0},
        },
    }

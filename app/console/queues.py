"""Queues: the six queues with their counts, status, consumers and pause state; pause, resume, and retrying every
failed job of a queue (after a confirmation that states how many)."""

from __future__ import annotations

from flask import Blueprint, Response, render_template, url_for

from app.api.kit.current import current_settings
from app.console.auth import audited, require_operator
from app.console.web import back, failed, ok
from app.core.errors import ServiceError
from app.jobs import ops, queues

bp = Blueprint("queues", __name__)


@bp.get("/queues")
def index() -> str:
    return render_template("console/queues.html", queues=queues.overview(current_settings()))


@bp.post("/queues/<name>/pause")
def pause(name: str) -> Response:
    require_operator()
    try:
        queues.pause(name, current_settings())
    except ServiceError as err:
        failed(err.message)
    else:
        audited("queue_paused", "queue", name)
        ok(f"Queue {name} paused: its workers stopped consuming it; new jobs still queue up.")
    return back("queues.index")


@bp.post("/queues/<name>/resume")
def resume(name: str) -> Response:
    require_operator()
    try:
        result = queues.resume(name, current_settings())
    except ServiceError as err:
        failed(err.message)
    else:
        audited("queue_resumed", "queue", name)
        ok(f"Queue {name} resumed ({result['notified_workers']} worker(s) told to consume it again).")
    return back("queues.index")


@bp.get("/queues/<name>/retry-failed")
def confirm_retry_failed(name: str) -> str:
    require_operator()
    total, _ = queues.list_jobs(name, "failed", 0, 1, current_settings())
    return render_template(
        "console/confirm.html",
        title=f"Retry the failed jobs of {name}",
        count=total,
        message=f"This re-queues {total} failed job{'' if total == 1 else 's'} of {name}, each with its own task, "
        "arguments and id; their attempts start again from 0.",
        action=url_for("queues.retry_failed", name=name),
        fields={},
        confirm="Retry them",
        cancel=url_for("jobs.index", queue=name, state="failed"),
    )


@bp.post("/queues/<name>/retry-failed")
def retry_failed(name: str) -> Response:
    require_operator()
    try:
        result = ops.retry_failed(name, current_settings())
    except ServiceError as err:
        failed(err.message)
    else:
        audited("jobs_retried", "queue", name, {"retried": result["retried"]})
        ok(f"{result['retried']} failed job(s) of {name} re-queued.")
    return back("jobs.index", queue=name, state="failed")

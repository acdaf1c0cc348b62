"""Jobs: a queue's jobs by state, paginated and searchable by id or task; one job's payload, attempts, times,
error, stack trace and result; retry, delete, and delete-by-filter after a confirmation that states the count.

Everything goes through `app.jobs.queues` and `app.jobs.ops`, as the API's handlers do. The listings have no task
filter, so a task search reads the state's jobs a page at a time (at most SEARCH_SCAN of them, newest first) and
says when it stopped early; the count a filtered delete confirms is taken the same way, over every job, and the
delete itself reports how many it removed (jobs finish or arrive in between).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, url_for

from app.api.kit.current import current_settings
from app.celery.queues import QUEUE_NAMES
from app.console.auth import audited, require_operator
from app.console.web import back, failed, ok
from app.core.errors import InvalidInput, NotFound, ServiceError
from app.jobs import ops, queues

bp = Blueprint("jobs", __name__)

STATES = ("waiting", "active", "failed", "completed", "revoked")
DELETABLE = ("waiting", "failed", "completed", "revoked")  # running jobs are deleted one at a time
PAGE_SIZE = 25
SCAN_PAGE = 500
SEARCH_SCAN = 2000
MAX_ID = 128


def _choice(name: str, allowed: tuple[str, ...], default: str) -> str:
    value = request.values.get(name, default)
    return value if value in allowed else default


def _offset() -> int:
    try:
        return max(0, int(request.args.get("offset", 0)))
    except ValueError:
        return 0


def _scan(queue: str, state: str, limit: int | None = None):
    """The state's jobs in listing order, a page at a time; at most `limit` of them."""
    settings = current_settings()
    offset = 0
    while limit is None or offset < limit:
        total, page = queues.list_jobs(queue, state, offset, SCAN_PAGE, settings)
        yield from page[: None if limit is None else limit - offset]
        offset += SCAN_PAGE
        if not page or offset >= total:
            return


@bp.get("/jobs")
def index() -> Response | str:
    settings = current_settings()
    queue = _choice("queue", QUEUE_NAMES, QUEUE_NAMES[0])
    state = _choice("state", STATES, "waiting")
    search = request.args.get("q", "").strip()[:200]
    offset = _offset()
    note = None
    if search:
        if len(search) <= MAX_ID:
            try:
                job = ops.get_job(search, settings)
            except NotFound:
                job = None
            if job is not None:
                return redirect(url_for("jobs.detail", job_id=job["id"]), 303)
        needle = search.lower()
        matches = [j for j in _scan(queue, state, SEARCH_SCAN) if needle in (j.get("task") or "").lower()]
        total, page = len(matches), matches[offset : offset + PAGE_SIZE]
        state_total = queues.list_jobs(queue, state, 0, 1, settings)[0]
        if state_total > SEARCH_SCAN:
            note = f"Searched the first {SEARCH_SCAN} of {state_total} {state} jobs."
    else:
        total, page = queues.list_jobs(queue, state, offset, PAGE_SIZE, settings)
    counts = {s: queues.list_jobs(queue, s, 0, 1, settings)[0] for s in STATES}
    return render_template(
        "console/jobs.html",
        queue=queue,
        state=state,
        search=search,
        jobs=page,
        total=total,
        offset=offset,
        page_size=PAGE_SIZE,
        counts=counts,
        note=note,
        queue_names=QUEUE_NAMES,
        states=STATES,
        deletable=DELETABLE,
    )


@bp.get("/jobs/<job_id>")
def detail(job_id: str) -> str:
    job = ops.get_job(job_id[:MAX_ID], current_settings())
    return render_template("console/job.html", job=job)


@bp.post("/jobs/<job_id>/retry")
def retry(job_id: str) -> Response:
    require_operator()
    try:
        ops.retry_job(job_id, current_settings())
    except ServiceError as err:
        failed(err.message)
    else:
        audited("job_retried", "job", job_id)
        ok(f"Job {job_id} re-queued.")
    return back("jobs.detail", job_id=job_id)


EFFECT = {
    "waiting": "It is removed from its queue (or revoked, if a worker already holds it).",
    "active": "It is running: it is revoked and its process terminated.",
    "completed": "It has finished: only its record goes.",
    "failed": "It has failed: only its record goes.",
    "revoked": "It was revoked: only its record goes.",
}


@bp.get("/jobs/<job_id>/delete")
def confirm_delete(job_id: str) -> str:
    require_operator()
    job = ops.get_job(job_id[:MAX_ID], current_settings())
    return render_template(
        "console/confirm.html",
        title="Delete a job",
        count=1,
        message=f"This deletes 1 job: {job['id']} ({job['task']}, {job['state']} in {job['queue']}). "
        f"{EFFECT.get(job['state'], '')} Its record and history are removed.",
        action=url_for("jobs.delete", job_id=job["id"]),
        fields={"queue": job["queue"] or ""},
        confirm="Delete the job",
        cancel=url_for("jobs.detail", job_id=job["id"]),
    )


@bp.post("/jobs/<job_id>/delete")
def delete(job_id: str) -> Response:
    require_operator()
    try:
        result = ops.delete_job(job_id, current_settings())
    except ServiceError as err:
        failed(err.message)
        return back("jobs.index")
    audited("job_deleted", "job", job_id, {"action": result["action"], "previous_state": result["previous_state"]})
    ok(f"Job {job_id} deleted ({result['action'].replace('_', ' ')}).")
    job_queue = request.form.get("queue")
    return redirect(
        url_for("jobs.index", queue=job_queue, state=result["previous_state"])
        if job_queue
        else url_for("jobs.index", state=result["previous_state"]),
        303,
    )


# ---- delete by filter -----------------------------------------------------------------------------------------
def _filter() -> tuple[str, str, str | None, str | None, float | None]:
    """queue, state, task, older_than (as typed) and older_than as epoch seconds; InvalidInput when one is bad."""
    queue = request.values.get("queue", "")
    queues.require_queue(queue)
    state = request.values.get("state", "")
    if state not in DELETABLE:
        raise InvalidInput(f"Jobs can be deleted by filter when {', '.join(DELETABLE)}; running jobs one at a time.")
    task = request.values.get("task", "").strip()[:255] or None
    older_than = request.values.get("older_than", "").strip()[:64] or None
    try:
        ceiling = ops.parse_age(older_than)
    except ValueError as exc:
        raise InvalidInput(f"older_than: {exc}") from None
    return queue, state, task, older_than, ceiling


def _epoch(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() if value else None
    except ValueError:
        return None


def count_matching(queue: str, state: str, task: str | None, ceiling: float | None) -> int:
    """How many jobs `ops.delete_matching` would delete now, by its rules: an exact task name; an age measured
    from when a waiting job was created, and from when the others finished."""
    count = 0
    for job in _scan(queue, state):
        if task is not None and job.get("task") != task:
            continue
        if ceiling is not None:
            at = _epoch(job.get("created_at") if state == "waiting" else job.get("finished_at"))
            if at is None or (at >= ceiling if state == "waiting" else at > ceiling):
                continue
        count += 1
    return count


def _described(queue: str, state: str, task: str | None, older_than: str | None) -> str:
    parts = [f"{state} in {queue}"]
    if task:
        parts.append(f"task {task}")
    if older_than:
        parts.append(f"older than {older_than}")
    return ", ".join(parts)


@bp.get("/jobs/delete")
def confirm_delete_matching() -> Response | str:
    require_operator()
    try:
        queue, state, task, older_than, ceiling = _filter()
    except ServiceError as err:
        failed(err.message)
        return redirect(url_for("jobs.index", queue=request.args.get("queue"), state=request.args.get("state")))
    count = count_matching(queue, state, task, ceiling)
    what = _described(queue, state, task, older_than)
    fields = {
        "queue": queue,
        "state": state,
        "task": task or "",
        "older_than": older_than or "",
        "expected": str(count),
    }
    return render_template(
        "console/confirm.html",
        title="Delete jobs by filter",
        count=count,
        message=(
            f"This deletes {count} job{'' if count == 1 else 's'} ({what}), with their records and history."
            if count
            else f"No job matches ({what}): there is nothing to delete."
        ),
        action=url_for("jobs.delete_matching"),
        fields=fields,
        confirm=f"Delete {count} job{'' if count == 1 else 's'}",
        cancel=url_for("jobs.index", queue=queue, state=state),
    )


@bp.post("/jobs/delete")
def delete_matching() -> Response:
    require_operator()
    try:
        queue, state, task, older_than, ceiling = _filter()
        result = ops.delete_matching(queue, state, task=task, older_than=ceiling, settings=current_settings())
    except ServiceError as err:
        failed(err.message)
        return back("jobs.index")
    audited(
        "jobs_deleted",
        "queue",
        queue,
        {"status": state, "task": task, "older_than": older_than, "deleted": result["deleted"]},
    )
    expected = request.form.get("expected")
    ok(
        f"Deleted {result['deleted']} job(s) ({_described(queue, state, task, older_than)})"
        + (f"; {expected} matched when you confirmed." if expected and expected != str(result["deleted"]) else ".")
    )
    return redirect(url_for("jobs.index", queue=queue, state=state), 303)

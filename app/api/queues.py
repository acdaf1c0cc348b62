"""Queue and job operations (000): /api/v1/platform/system/queues, /enqueue.

Handlers validate, call `app.jobs.queues` / `job_ops` / `jobs`, and wrap the result in the
000 envelope. Every mutation is audited.
"""
from __future__ import annotations

from typing import Any, Literal

from flask import Blueprint
from pydantic import BaseModel, Field, field_validator

from app.api.kit.current import current_settings
from app.api.kit.endpoint import endpoint
from app.api.kit.respond import audited, ok
from app.jobs import ops
from app.jobs import enqueue
from app.jobs import queues
from app.jobs.registry import get_registry

bp = Blueprint("queues", __name__, url_prefix="/api/v1/platform/system")
TAGS = ["queues"]

JOB_ID = r"^[A-Za-z0-9_.:\-]{1,128}$"


class JobPath(BaseModel):
    job_id: str = Field(pattern=JOB_ID, description="Job (Celery task) id")


class QueueJobsQuery(BaseModel):
    status: Literal["active", "waiting", "failed", "completed", "revoked"] = Field(
        "waiting", description="Which jobs: waiting (from the broker, in run order), active, failed, completed, "
                               "revoked")
    limit: int = Field(50, ge=1, le=100, description="Page size (1-100)")
    offset: int = Field(0, ge=0, description="Jobs to skip")


class DeleteFilterQuery(BaseModel):
    status: Literal["waiting", "failed", "completed", "revoked"] = Field(
        description="Which jobs to delete (running jobs are deleted one at a time)")
    task: str | None = Field(None, max_length=255, description="Only jobs of this task name")
    older_than: str | None = Field(None, description="ISO 8601 time, or an age such as 30m, 24h, 7d")

    @field_validator("older_than")
    @classmethod
    def _age(cls, v: str | None) -> str | None:
        ops.parse_age(v)  # raises ValueError with a clear message
        return v


class EnqueueBody(BaseModel):
    task: Literal["detection", "analysis", "notification", "alerts", "cleanup"] = Field(
        description="Task family (`alerts` runs on the notification queues)")
    payload: dict[str, Any] = Field(default_factory=dict, description="The task's arguments (schema per task)")
    priority: Literal["high", "normal"] = Field("normal", description="high goes to the family's :high queue")
    idempotency_key: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
                                        description="Same key, same job: nothing is enqueued twice")


def job_view(job: dict[str, Any]) -> dict[str, Any]:
    """A registry record in the 000 job shape."""
    error = None
    if job.get("error") or job.get("traceback"):
        error = {"message": job.get("error"), "stack_trace": job.get("traceback")}
    return {
        "id": job["id"],
        "queue": job.get("queue"),
        "status": job.get("state"),
        "task": job.get("task"),
        "payload": job.get("kwargs") or {},
        "args": job.get("args") or [],
        "error": error,
        "attempts": job.get("attempts", 0),
        "worker": job.get("worker"),
        "result": job.get("result"),
        "progress": job.get("progress"),
        "priority": job.get("priority"),
        "eta": job.get("eta"),
        "request_id": job.get("request_id"),
        "created_at": job.get("created_at"),
        "started_at": job.get("started_at"),
        "finished_at": job.get("finished_at"),
        "updated_at": job.get("updated_at") or job.get("created_at"),
    }


@bp.get("/queues")
@endpoint(summary="Every named queue with its counts and status", tags=TAGS)
def list_queues():
    """Waiting counts come from the broker's lists; active, completed and failed from the job
    registry and worker heartbeats. No worker broadcast on this path."""
    return ok({"queues": queues.overview(current_settings())})


@bp.get("/queues/<queue_name>/jobs")
@endpoint(query=QueueJobsQuery, summary="Jobs of a queue by status, paginated with an exact total", tags=TAGS,
          errors={404: "Unknown queue"})
def list_queue_jobs(queue_name: str, query: QueueJobsQuery):
    total, page = queues.list_jobs(queue_name, query.status, query.offset, query.limit, current_settings())
    return ok({"jobs": [job_view(j) for j in page],
               "pagination": {"total": total, "limit": query.limit, "offset": query.offset}})


@bp.post("/queues/<queue_name>/pause")
@endpoint(summary="Stop every worker consuming the queue (persisted); jobs are still accepted", tags=TAGS,
          errors={404: "Unknown queue"})
def pause_queue(queue_name: str):
    result = queues.pause(queue_name, current_settings())
    audited("queue_paused", "queue", queue_name)
    return ok(result)


@bp.post("/queues/<queue_name>/resume")
@endpoint(summary="Let the queue's workers consume it again", tags=TAGS, errors={404: "Unknown queue"})
def resume_queue(queue_name: str):
    result = queues.resume(queue_name, current_settings())
    audited("queue_resumed", "queue", queue_name)
    return ok(result)


@bp.post("/queues/<queue_name>/retry-failed")
@endpoint(summary="Retry every failed job of the queue", tags=TAGS, errors={404: "Unknown queue"})
def retry_failed_jobs(queue_name: str):
    result = ops.retry_failed(queue_name, current_settings())
    audited("jobs_retried", "queue", queue_name, {"retried": result["retried"]})
    return ok(result)


@bp.delete("/queues/<queue_name>/jobs")
@endpoint(query=DeleteFilterQuery, summary="Delete a queue's jobs by status, task and age", tags=TAGS,
          errors={404: "Unknown queue"})
def delete_queue_jobs(queue_name: str, query: DeleteFilterQuery):
    result = ops.delete_matching(queue_name, query.status, task=query.task,
                                     older_than=ops.parse_age(query.older_than), settings=current_settings())
    audited("jobs_deleted", "queue", queue_name, {**query.model_dump(), "deleted": result["deleted"]})
    return ok(result)


@bp.post("/jobs")
@endpoint(body=EnqueueBody, status=202, summary="Enqueue a job (202 once the broker holds it)", tags=TAGS)
def enqueue_job(body: EnqueueBody):
    """`detection` takes `camera_id` and an image `path` inside the camera root; `analysis` a
    `batch_id`; `notification` a `channel` and `message`; `alerts` an `event_id` (evaluate the alert
    rules for that event again; alerts already raised are not raised twice); `cleanup` an optional
    `dry_run`. The same `idempotency_key` returns the first job (200) and enqueues nothing."""
    result = enqueue.enqueue(body.task, body.payload, priority=body.priority, idempotency_key=body.idempotency_key,
                          settings=current_settings())
    data = {"job_id": result.job_id, "status": "queued", "task": result.task, "queue": result.queue,
            "created": result.created}
    if result.created:
        audited("job_enqueued", "job", result.job_id, {"task": body.task, "queue": result.queue})
        return ok(data, 202)
    job = get_registry(current_settings()).get(result.job_id)
    data["status"] = job["state"] if job else "queued"
    return ok(data, 200)


@bp.get("/jobs/<job_id>")
@endpoint(path=JobPath, summary="One job: payload, state, attempts, error and stack trace, result", tags=TAGS,
          errors={404: "Unknown job"})
def get_job(job_id: str):
    return ok(job_view(ops.get_job(job_id, current_settings())))


@bp.post("/jobs/<job_id>/retry")
@endpoint(path=JobPath, summary="Re-queue a failed job (same task, arguments and queue)", tags=TAGS,
          errors={404: "Unknown job", 409: "The job is not failed"})
def retry_job(job_id: str):
    result = ops.retry_job(job_id, current_settings())
    audited("job_retried", "job", job_id)
    return ok(result)


@bp.delete("/jobs/<job_id>")
@endpoint(path=JobPath, summary="Delete a job: from the queue, revoked, or terminated; says which", tags=TAGS,
          errors={404: "Unknown job"})
def delete_job(job_id: str):
    result = ops.delete_job(job_id, current_settings())
    audited("job_deleted", "job", job_id, {"action": result["action"], "previous_state": result["previous_state"]})
    return ok(result)

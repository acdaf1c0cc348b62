"""Queue and job operations (platform API): /api/v1/platform/system/queues, /enqueue.

Handlers validate, call `app.jobs.queues` / `job_ops` / `jobs`, and wrap the result in the
platform API's envelope. Every mutation is audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Union

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field, RootModel, create_model

from app.api.kit.current import current_settings
from app.api.kit.endpoint import Link, endpoint
from app.api.kit.envelopes import Answer, PlatformError
from app.api.kit.respond import audited, ok, who
from app.api.kit.types import Offset, Timestamp
from app.celery.queues import QUEUE_NAMES, queue_for
from app.jobs import enqueue, ops, queues
from app.jobs.registry import get_registry

bp = Blueprint("queues", __name__, url_prefix="/api/v1/platform/system")
TAGS = ["queues"]

JOB_ID = r"^[A-Za-z0-9_.:\-]{1,128}$"
JobState = Literal["waiting", "active", "completed", "failed", "revoked"]


# What `job_id` = `batch` answers: that path is the bulk enqueue route, which takes only POST.
BATCH_IS_NO_JOB = "`batch` is no job id: `/jobs/batch` is the bulk enqueue route (POST only)"


class JobPath(BaseModel):
    job_id: str = Field(
        pattern=JOB_ID,
        # The router holds it (`other_than(batch)`): `/jobs/batch` is the bulk enqueue route, never a job.
        json_schema_extra={"not": {"const": "batch"}},
        description="Job (Celery task) id; `batch` is not one (`/jobs/batch` is the bulk enqueue route)",
    )


class QueuePath(BaseModel):
    queue_name: str = Field(
        min_length=1, max_length=64, description=f"Queue name: {', '.join(QUEUE_NAMES)} (any other is a 404)"
    )


class QueueJobsQuery(BaseModel):
    status: JobState = Field(
        "waiting", description="Which jobs: waiting (from the broker, in run order), active, failed, completed, revoked"
    )
    limit: int = Field(50, ge=1, le=100, description="Page size (1-100)")
    offset: Offset = 0


AGE = r"^[0-9]{1,12}(?:\.[0-9]{1,6})?[smhd]$"


class DeleteFilterQuery(BaseModel):
    status: Literal["waiting", "failed", "completed", "revoked"] = Field(
        description="Which jobs to delete (running jobs are deleted one at a time)"
    )
    task: str | None = Field(None, max_length=255, description="Only jobs of this task name")
    older_than: Annotated[str, Field(pattern=AGE)] | Timestamp | None = Field(
        None, description="An age (a number and s, m, h or d: 90s, 15m, 24h, 7d) or an ISO 8601 time"
    )

    def cutoff(self) -> float | None:
        """`older_than` as epoch seconds."""
        if isinstance(self.older_than, datetime):
            return self.older_than.timestamp()
        return ops.parse_age(self.older_than)


def _enqueue_variant(name: str, spec: enqueue.TaskSpec) -> type[BaseModel]:
    """The request body for one task family: its own payload schema, so a client (and the document)
    knows what each task takes."""
    try:
        spec.adapter.validate_python({})
        payload: Any = (spec.payload, Field(default_factory=dict, description=f"Arguments of `{spec.task}`"))
    except ValueError:
        payload = (spec.payload, Field(description=f"Arguments of `{spec.task}`"))
    return create_model(
        f"Enqueue{name.title()}Job",
        __config__=ConfigDict(extra="forbid", strict=True),
        task=(Literal[name], Field(description=f"`{name}`: runs `{spec.task}` on the {spec.family} queues")),
        payload=payload,
        priority=(Literal["high", "normal"], Field("normal", description="high goes to the family's :high queue")),
        idempotency_key=(
            str | None,
            Field(
                None,
                min_length=1,
                max_length=200,
                pattern=r"^[\x21-\x7e]+$",
                description="Same key, same job: nothing is enqueued twice",
            ),
        ),
    )


_VARIANTS = tuple(_enqueue_variant(name, spec) for name, spec in enqueue.TASKS.items())


# A union of the variants built above (`|` cannot unpack a tuple).
_Variant = Annotated[Union[_VARIANTS], Field(discriminator="task")]  # type: ignore[valid-type]  # noqa: UP007


class EnqueueBody(RootModel[_Variant]):  # type: ignore[valid-type]
    """A job to enqueue: `task` names the family, `payload` its arguments."""


MAX_BATCH = 1000  # jobs per POST /jobs/batch (docs/api.md)


class EnqueueBatchBody(BaseModel):
    """Jobs to enqueue in one request, each exactly a `POST /jobs` body."""

    model_config = ConfigDict(extra="forbid", strict=True)

    jobs: list[_Variant] = Field(  # type: ignore[valid-type]
        min_length=1, max_length=MAX_BATCH, description=f"1 to {MAX_BATCH} jobs of any tasks"
    )


# --- answers -----------------------------------------------------------------------------------------------
class Queue(Answer):
    name: str
    priority: Literal["high", "normal"]
    active_jobs: int = Field(description="Jobs running on a live worker")
    waiting_jobs: int = Field(description="Messages in the broker, every priority level")
    completed_last_hour: int
    failed_jobs: int = Field(description="Failed jobs still in the registry (retryable)")
    status: Literal["healthy", "warning", "critical"] = Field(
        description="healthy < 100 waiting; warning 100-1000 waiting, or jobs waiting with no consumer; "
        "critical > 1000 waiting or > 10 failed"
    )
    paused: bool
    consumers: int = Field(description="Live workers consuming the queue now")
    consumer_nodes: list[str]
    orphaned_active_jobs: int = Field(description="Jobs registered as running on a worker whose heartbeat is gone")


class QueueList(Answer):
    queues: list[Queue]


class JobError(Answer):
    message: str | None
    stack_trace: str | None


class Job(Answer):
    id: str
    queue: str | None
    status: JobState | None
    task: str | None
    payload: dict[str, Any]
    args: list[Any] | dict[str, Any] = Field(
        description="Positional arguments (`{truncated, preview}` when too large to keep)"
    )
    error: JobError | None
    attempts: int
    worker: str | None
    result: Any
    progress: Any
    priority: int | None = Field(description="Broker priority (waiting jobs only)")
    eta: str | None
    request_id: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    updated_at: str | None


class Pagination(Answer):
    total: int
    limit: int
    offset: int


class JobPage(Answer):
    jobs: list[Job]
    pagination: Pagination


class QueuePaused(Answer):
    queue: str
    status: Literal["paused"]
    timestamp: str


class QueueResumed(Answer):
    queue: str
    status: Literal["active"]
    timestamp: str
    notified_workers: int


class FailedRetried(Answer):
    queue: str
    retried: int


class JobsDeleted(Answer):
    queue: str
    status: Literal["waiting", "failed", "completed", "revoked"]
    deleted: int


class Enqueued(Answer):
    job_id: str
    status: Literal["queued"] | JobState = Field(description="queued when created; the job's state on a replay")
    task: str = Field(description="The Celery task name")
    queue: str
    created: bool = Field(description="false when an idempotency key returned an earlier job")


class BatchItemError(Answer):
    code: Literal["idempotency_conflict"]
    message: str


class BatchItem(Answer):
    index: int = Field(description="Position of the job in the request")
    job_id: str = Field(description="The job created, or the earlier job its idempotency key names")
    status: Literal["queued", "conflict"] | JobState = Field(
        description="queued when created; the earlier job's state on a replay; conflict when the key names "
        "a job with another task, queue or payload (nothing enqueued)"
    )
    task: str = Field(description="The Celery task name")
    queue: str
    created: bool
    error: BatchItemError | None


class BatchEnqueued(Answer):
    jobs: list[BatchItem] = Field(description="One result per job, in request order")
    created: int = Field(description="Jobs enqueued by this request")
    existing: int = Field(description="Jobs an idempotency key named already (nothing enqueued)")
    conflicts: int = Field(description="Jobs refused: their idempotency key names a different job")


class IdempotencyConflict(PlatformError):
    job_id: str = Field(description="The job the key already names")


class JobRetried(Answer):
    job_id: str
    status: Literal["queued"]
    attempts_reset: bool
    queue: str


class JobDeleted(Answer):
    job_id: str
    deleted: bool
    previous_state: JobState
    action: Literal["removed_from_queue", "revoked", "revoked_and_terminated", "record_removed"]


def job_view(job: dict[str, Any]) -> dict[str, Any]:
    """A registry record in the platform API's job shape."""
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


_QUEUE_0 = "$response.body#/data/queues/0/name"
_JOB = "$response.body#/data/job_id"
_QUEUE_LINKS = {
    "ListQueueJobs": Link("queues.list_queue_jobs", {"queue_name": _QUEUE_0}),
    "PauseQueue": Link("queues.pause_queue", {"queue_name": _QUEUE_0}),
    "ResumeQueue": Link("queues.resume_queue", {"queue_name": _QUEUE_0}),
    "RetryFailedJobs": Link("queues.retry_failed_jobs", {"queue_name": _QUEUE_0}),
    "DeleteQueueJobs": Link("queues.delete_queue_jobs", {"queue_name": _QUEUE_0}),
}
_JOB_LINKS = {
    "GetJob": Link("queues.get_job", {"job_id": _JOB}),
    "RetryJob": Link("queues.retry_job", {"job_id": _JOB}),
    "DeleteJob": Link("queues.delete_job", {"job_id": _JOB}),
    "ListTheJobsQueue": Link("queues.list_queue_jobs", {"queue_name": "$response.body#/data/queue"}),
}


@bp.get("/queues")
@endpoint(response=QueueList, summary="Every named queue with its counts and status", tags=TAGS, links=_QUEUE_LINKS)
def list_queues():
    """Waiting counts come from the broker's lists; active, completed and failed from the job
    registry and worker heartbeats. No worker broadcast on this path."""
    return ok({"queues": queues.overview(current_settings())})


@bp.get("/queues/<queue_name>/jobs")
@endpoint(
    path=QueuePath,
    query=QueueJobsQuery,
    response=JobPage,
    tags=TAGS,
    errors={404: "Unknown queue"},
    summary="Jobs of a queue by status, paginated with an exact total",
    links={
        "GetJob": Link("queues.get_job", {"job_id": "$response.body#/data/jobs/0/id"}),
        "RetryJob": Link("queues.retry_job", {"job_id": "$response.body#/data/jobs/0/id"}),
    },
)
def list_queue_jobs(queue_name: str, query: QueueJobsQuery):
    total, page = queues.list_jobs(queue_name, query.status, query.offset, query.limit, current_settings())
    return ok(
        {
            "jobs": [job_view(j) for j in page],
            "pagination": {"total": total, "limit": query.limit, "offset": query.offset},
        }
    )


@bp.post("/queues/<queue_name>/pause")
@endpoint(
    path=QueuePath,
    response=QueuePaused,
    tags=TAGS,
    errors={404: "Unknown queue"},
    summary="Stop every worker consuming the queue (persisted); jobs are still accepted",
)
def pause_queue(queue_name: str):
    result = queues.pause(queue_name, current_settings())
    audited("queue_paused", "queue", queue_name)
    return ok(result)


@bp.post("/queues/<queue_name>/resume")
@endpoint(
    path=QueuePath,
    response=QueueResumed,
    summary="Let the queue's workers consume it again",
    tags=TAGS,
    errors={404: "Unknown queue"},
)
def resume_queue(queue_name: str):
    result = queues.resume(queue_name, current_settings())
    audited("queue_resumed", "queue", queue_name)
    return ok(result)


@bp.post("/queues/<queue_name>/retry-failed")
@endpoint(
    path=QueuePath,
    response=FailedRetried,
    summary="Retry every failed job of the queue",
    tags=TAGS,
    errors={404: "Unknown queue"},
)
def retry_failed_jobs(queue_name: str):
    result = ops.retry_failed(queue_name, current_settings())
    audited("jobs_retried", "queue", queue_name, {"retried": result["retried"]})
    return ok(result)


@bp.delete("/queues/<queue_name>/jobs")
@endpoint(
    path=QueuePath,
    query=DeleteFilterQuery,
    response=JobsDeleted,
    tags=TAGS,
    errors={404: "Unknown queue"},
    summary="Delete a queue's jobs by status, task and age",
)
def delete_queue_jobs(queue_name: str, query: DeleteFilterQuery):
    result = ops.delete_matching(
        queue_name, query.status, task=query.task, older_than=query.cutoff(), settings=current_settings()
    )
    audited("jobs_deleted", "queue", queue_name, {**query.model_dump(mode="json"), "deleted": result["deleted"]})
    return ok(result)


@bp.post("/jobs")
@endpoint(
    body=EnqueueBody,
    status=202,
    response=Enqueued,
    responses={200: Enqueued},
    tags=TAGS,
    summary="Enqueue a job (202 once the broker holds it)",
    links=_JOB_LINKS,
    errors={
        400: "Invalid body; or a detection `path` that is not an existing image inside the camera root",
        409: ("The idempotency key already names a job with another task, queue or payload", IdempotencyConflict),
    },
)
def enqueue_job(body: EnqueueBody):
    """Each `task` takes its own `payload` (see the schema of each variant): `detection` a
    `camera_id` and an image `path` inside the camera root; `analysis` a `batch_id`;
    `notification` a `channel` with its destination (`recipients` for email, `url` for webhook) and a
    `message`; `alerts` an `event_id` (evaluate the alert rules for that event again; alerts already
    raised are not raised twice); `cleanup` an optional `dry_run`. Unknown fields are refused at
    every level.

    A detection's image must exist inside the camera root once symlinks are resolved, which no
    schema can say: otherwise 400 naming `payload.path`. The same `idempotency_key` with the same
    task, priority and payload returns the first job (200) and enqueues nothing; with anything else
    it is a 409 naming that job."""
    job = body.root
    payload, validated = _payload_of(job)
    result = enqueue.enqueue(
        job.task,
        payload,
        priority=job.priority,
        idempotency_key=job.idempotency_key,
        settings=current_settings(),
        validated=validated,
        audit=who(),  # written with the job (app/jobs/enqueue.py): no SQL on this path
    )
    data = {
        "job_id": result.job_id,
        "status": "queued",
        "task": result.task,
        "queue": result.queue,
        "created": result.created,
    }
    if result.created:
        return ok(data, 202)
    record = get_registry(current_settings()).get(result.job_id)
    data["status"] = record["state"] if record else "queued"
    return ok(data, 200)


def _payload_of(job: Any) -> tuple[dict[str, Any], bool]:
    """The job's payload as `enqueue` takes it, and whether it is validated already. The body model
    is the family's own payload model, so its dump is what `validate_payload` would return; only a
    detection's `path` needs the camera root, which no body model knows, and is validated again."""
    if isinstance(job.payload, BaseModel) and job.task != "detection":
        return enqueue.TASKS[job.task].adapter.dump_python(job.payload, mode="json", exclude_none=True), True
    data = job.payload.model_dump(exclude_unset=True) if isinstance(job.payload, BaseModel) else job.payload
    return data, False


@bp.post("/jobs/batch")
@endpoint(
    body=EnqueueBatchBody,
    status=202,
    response=BatchEnqueued,
    responses={200: BatchEnqueued},
    tags=TAGS,
    summary=f"Enqueue up to {MAX_BATCH} jobs of any tasks in one request",
    links={"GetJob": Link("queues.get_job", {"job_id": "$response.body#/data/jobs/0/job_id"})},
    errors={400: "Invalid body, or any job invalid (nothing is enqueued); the errors name `jobs.<i>.<field>`"},
)
def enqueue_jobs_batch(body: EnqueueBatchBody):
    """Validation is all or nothing: every job is checked as `POST /jobs` checks it (a detection's
    image must exist inside the camera root) before any is published, and one invalid job is a 400
    naming `jobs.<index>.<field>` with nothing enqueued. The jobs are then published in pipelined
    round trips, each atomically with its registry record and its idempotency key; the answer
    lists one result per job in request order. An idempotency key is honoured per job: a key that
    already names the same job returns it (`created: false`, its state as `status`); one that names
    a job with another task, queue or payload is that job's `conflict` (its `job_id` is the named
    job), and the other jobs are still enqueued. 202 when the request created a job, 200 when every
    job was already there. One `jobs_enqueued` audit entry records the batch."""
    settings = current_settings()
    requests = []
    for job in body.jobs:
        payload, validated = _payload_of(job)
        requests.append(enqueue.JobRequest(job.task, payload, job.priority, job.idempotency_key, validated))
    outcomes = enqueue.enqueue_many(requests, settings=settings, audit=who())
    replayed = [o.job_id for o in outcomes if isinstance(o, enqueue.Enqueued) and not o.created]
    states = {j["id"]: j.get("state") for j in get_registry(settings).get_many(replayed)} if replayed else {}
    items, counts = [], {"created": 0, "existing": 0, "conflicts": 0}
    for index, (job, outcome) in enumerate(zip(body.jobs, outcomes)):
        if isinstance(outcome, enqueue.Enqueued):
            counts["created" if outcome.created else "existing"] += 1
            status = "queued" if outcome.created else (states.get(outcome.job_id) or "queued")
            item = {"job_id": outcome.job_id, "status": status, "task": outcome.task, "queue": outcome.queue}
            items.append({"index": index, **item, "created": outcome.created, "error": None})
        else:
            counts["conflicts"] += 1
            spec = enqueue.TASKS[job.task]
            items.append(
                {
                    "index": index,
                    "job_id": (outcome.extra or {}).get("job_id", ""),
                    "status": "conflict",
                    "task": spec.task,
                    "queue": queue_for(spec.family, job.priority),
                    "created": False,
                    "error": {"code": "idempotency_conflict", "message": outcome.message},
                }
            )
    return ok({"jobs": items, **counts}, 202 if counts["created"] else 200)


@bp.get("/jobs/<other_than(batch):job_id>")
@endpoint(
    path=JobPath,
    response=Job,
    summary="One job: payload, state, attempts, error and stack trace, result",
    tags=TAGS,
    errors={404: "Unknown job", 405: BATCH_IS_NO_JOB},
)
def get_job(job_id: str):
    return ok(job_view(ops.get_job(job_id, current_settings())))


@bp.post("/jobs/<other_than(batch):job_id>/retry")
@endpoint(
    path=JobPath,
    response=JobRetried,
    summary="Re-queue a failed job (same task, arguments and queue)",
    tags=TAGS,
    errors={404: "Unknown job", 409: "The job is not failed"},
)
def retry_job(job_id: str):
    result = ops.retry_job(job_id, current_settings())
    audited("job_retried", "job", job_id)
    return ok(result)


@bp.delete("/jobs/<other_than(batch):job_id>")
@endpoint(
    path=JobPath,
    response=JobDeleted,
    tags=TAGS,
    errors={404: "Unknown job", 405: BATCH_IS_NO_JOB},
    summary="Delete a job: from the queue, revoked, or terminated; says which",
)
def delete_job(job_id: str):
    result = ops.delete_job(job_id, current_settings())
    audited("job_deleted", "job", job_id, {"action": result["action"], "previous_state": result["previous_state"]})
    return ok(result)

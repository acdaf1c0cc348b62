"""Enqueueing work: payload schemas per task family, priority routing and idempotency.

The API's `POST /jobs`, the file watcher and the pipeline stages all enqueue through `enqueue`, so
every job is validated the same way and lands in the registry the same way.

This module is the request-facing half: what a job may contain, where it goes, what an
idempotency key means and what a caller gets back. How the message is prepared and reaches the
broker (kombu's publish captured, message templates, the one Lua script per job) is in
app/jobs/publish.py, which depends on Celery's and kombu's internals where this module does not.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import redis
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator

from app.celery.queues import queue_for
from app.core.errors import Conflict, InvalidInput, Unavailable
from app.core.redis_client import get_redis
from app.core.settings import Settings, get_settings
from app.jobs import publish
from app.jobs.publish import IDEMPOTENCY_KEY, Job
from app.jobs.registry import AUDIT_KEY
from app.observability.audit import Audit
from app.observability.audit import record as record_audit

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
CAMERA_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


def normalize_camera_id(name: str) -> str:
    """Folder name -> camera id: lower case, runs of other characters become `_`."""
    cid = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
    return cid[:64] or "camera"


def resolve_in_root(path: str | Path, root: Path) -> Path:
    """The real path of `path` (absolute, or relative to `root`), refusing anything outside `root`.

    Symlinks are resolved first, so a link inside the root that points elsewhere is refused too.
    """
    root = Path(root).resolve()
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = root / candidate
    real = candidate.resolve()
    if real != root and root not in real.parents:
        raise ValueError(f"path is outside the camera root {root}")
    return real


MAX_DB_ID = 2**63 - 1  # ids of BIGINT rows
EMAIL_ADDRESS = r"^[^@\s<>]+@[^@\s<>]+$"
URL = r"^https?://[^\x00]*$"


class _Payload(BaseModel):
    # JSON's own types: `"5"` and `true` are not numbers, as the schema says (the API hands whole
    # numbers written `5.0` over as integers).
    model_config = ConfigDict(extra="forbid", strict=True)


class DetectionPayload(_Payload):
    camera_id: str = Field(
        pattern=CAMERA_ID.pattern,
        description="Camera id (normalised folder name: lower-case letters, digits, '_' or '-', at most 64)",
    )
    path: str = Field(
        min_length=1,
        max_length=4096,
        description="Image path, absolute or relative to the camera root; it must be an existing "
        ".jpg/.jpeg/.png file inside the root once symlinks are resolved",
    )
    file_hash: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the file")
    seen_at: float | None = Field(None, description="Epoch seconds the watcher saw the file complete")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str, info: ValidationInfo) -> str:
        root = (info.context or {}).get("camera_root")
        if root is None:
            return v
        real = resolve_in_root(v, root)
        if real.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"not an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
        if not real.is_file():
            raise ValueError("no such file")
        return str(real)


class AnalysisPayload(_Payload):
    batch_id: str = Field(min_length=1, max_length=64)
    camera_id: str | None = Field(None, max_length=64)


class _Notification(_Payload):
    subject: str = Field("Vigil alert", max_length=200)
    message: str = Field(min_length=1, max_length=10000)
    event_id: int | None = Field(None, ge=1, le=MAX_DB_ID)
    alert_id: str | None = Field(None, max_length=64)
    alert: dict[str, Any] | None = Field(None, description="An alert's facts, sent as JSON to a webhook")


class EmailNotification(_Notification):
    channel: Literal["email"]
    recipients: list[Annotated[str, Field(max_length=254, pattern=EMAIL_ADDRESS)]] = Field(
        min_length=1, max_length=100, description="E-mail addresses"
    )
    url: str | None = Field(None, max_length=2048, pattern=URL, description="Ignored for e-mail")


class WebhookNotification(_Notification):
    channel: Literal["webhook"]
    url: str = Field(max_length=2048, pattern=URL, description="Webhook URL (http or https)")
    recipients: list[Annotated[str, Field(max_length=254, pattern=EMAIL_ADDRESS)]] = Field(
        default_factory=list, max_length=100, description="Ignored for webhooks"
    )


# The channel decides which destination is required, so the schema says so too.
NotificationPayload = Annotated[EmailNotification | WebhookNotification, Field(discriminator="channel")]


class AlertsPayload(_Payload):
    event_id: int = Field(ge=1, le=MAX_DB_ID, description="The scored event whose alert rules to evaluate")


class CleanupPayload(_Payload):
    dry_run: bool = False


@dataclass(frozen=True)
class TaskSpec:
    family: str
    task: str
    payload: Any  # a payload model, or an annotated union of them

    @cached_property
    def adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.payload)


TASKS: dict[str, TaskSpec] = {
    "detection": TaskSpec("detection", "vigil.detection.detect", DetectionPayload),
    "analysis": TaskSpec("analysis", "vigil.analysis.analyze", AnalysisPayload),
    "notification": TaskSpec("notification", "vigil.notification.send", NotificationPayload),
    "alerts": TaskSpec("notification", "vigil.notification.fire_alerts", AlertsPayload),
    "cleanup": TaskSpec("cleanup", "vigil.cleanup.run", CleanupPayload),
}


def error_field(loc: tuple[Any, ...], data: Any) -> str:
    """A pydantic error location as the dotted field a client sent. Discriminated unions put the
    tag in the location (`('webhook', 'url')`); an element that is not a key of the input where it
    stands, and is not its last element, is such a tag and is left out."""
    parts: list[str] = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict):
            if part in node or last:
                parts.append(str(part))
                node = node.get(part)
            continue
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            parts.append(str(part))
            node = node[part]
            continue
        parts.append(str(part))
        node = None
    return ".".join(parts)


@dataclass(frozen=True)
class Enqueued:
    job_id: str
    task: str
    queue: str
    created: bool  # False when an idempotency key returned an earlier job


def validate_payload(family: str, payload: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or get_settings()
    spec = TASKS.get(family)
    if spec is None:
        raise InvalidInput(
            f"Unknown task '{family}'; expected one of {', '.join(TASKS)}",
            errors=[{"location": "body", "field": "task", "message": "unknown task"}],
        )
    try:
        model = spec.adapter.validate_python(payload, context={"camera_root": settings.camera_root})
    except ValidationError as exc:
        errors = []
        for e in exc.errors(include_url=False):
            where = error_field(tuple(e["loc"]), payload)
            if e["type"].startswith("union_tag") and e.get("ctx", {}).get("discriminator"):
                where = ".".join(p for p in (where, e["ctx"]["discriminator"].strip("'")) if p)
            errors.append(
                {
                    "location": "body",
                    "field": ".".join(p for p in ("payload", where) if p),
                    "message": e["msg"],
                    "type": e["type"],
                }
            )
        first = errors[0]
        raise InvalidInput(
            f"Invalid payload for task '{family}': field '{first['field']}': {first['message']}", errors=errors
        ) from None
    return spec.adapter.dump_python(model, mode="json", exclude_none=True)


def _fingerprint(task: str, queue: str, kwargs: dict[str, Any]) -> str:
    """What makes two requests with one idempotency key the same request: task, queue and payload."""
    text = json.dumps({"task": task, "queue": queue, "kwargs": kwargs}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _claimed(stored: str) -> tuple[str, str | None]:
    """(job id, fingerprint) of an idempotency key's value; keys stored before fingerprints were
    kept hold the bare job id."""
    try:
        value = json.loads(stored)
    except ValueError:
        return stored, None
    if isinstance(value, dict) and isinstance(value.get("job_id"), str):
        return value["job_id"], value.get("fp")
    return stored, None


@dataclass(frozen=True)
class JobRequest:
    """One job to enqueue, as `enqueue` takes it; `enqueue_many` takes a list of them."""

    family: str
    payload: dict[str, Any]
    priority: str = "normal"
    idempotency_key: str | None = None
    validated: bool = False  # `payload` is already `validate_payload`'s output


def enqueue(
    family: str,
    payload: dict[str, Any],
    *,
    priority: str = "normal",
    idempotency_key: str | None = None,
    idempotency_ttl: int | None = None,
    settings: Settings | None = None,
    validated: bool = False,
    audit: Audit | None = None,
) -> Enqueued:
    """Validate, route and publish one job; return once the broker holds the message.

    With an idempotency key, the first caller's job id is stored before publishing, so a concurrent
    or repeated call with the same key gets that job back and publishes nothing; the same key with
    another task, queue or payload is a Conflict naming the job. `audit` names who asked: a
    `job_enqueued` audit entry is written with the job.
    """
    [outcome] = enqueue_many(
        [JobRequest(family, payload, priority, idempotency_key, validated)],
        idempotency_ttl=idempotency_ttl,
        settings=settings,
        audit=audit,
        batch_audit=False,
        indexed_errors=False,
    )
    if isinstance(outcome, Conflict):
        raise outcome
    return outcome


def enqueue_many(
    requests: list[JobRequest],
    *,
    idempotency_ttl: int | None = None,
    settings: Settings | None = None,
    audit: Audit | None = None,
    batch_audit: bool = True,
    indexed_errors: bool = True,
) -> list[Enqueued | Conflict]:
    """Validate every job first (all or nothing: InvalidInput naming `jobs.<i>.<field>`), then
    publish them in pipelined round trips; one outcome per request, in order: the job (created, or
    an earlier one its idempotency key named) or the Conflict of a key reused with another payload.

    When the broker, the registry and the idempotency keys share one Redis database (as `make run`
    configures them), each job is one script that claims its key, writes its registry record and
    pushes its message atomically, and a pipeline carries `publish.PIPELINE_CHUNK` of them per round
    trip; no SQL is written (the audit entry waits in Redis for the registry archiver). Otherwise
    each job is published as before: key, then Celery's publish, then the audit row.
    """
    settings = settings or get_settings()
    ttl = idempotency_ttl or settings.idempotency_ttl
    jobs = _prepare(requests, settings, indexed_errors)
    if not publish.one_database(settings):
        return [_publish_separately(job, ttl, settings, audit) for job in jobs]
    try:
        publish.capture(jobs)
    except publish.NotCapturable:
        return [_publish_separately(job, ttl, settings, audit) for job in jobs]
    client = publish.publish_client(settings.redis_url)
    outcomes: list[Enqueued | Conflict] = []
    for start in range(0, len(jobs), publish.PIPELINE_CHUNK):
        chunk = jobs[start : start + publish.PIPELINE_CHUNK]
        replies = publish.run_scripts(client, chunk, ttl, None if batch_audit else audit, settings)
        outcomes.extend(_outcome(job, reply) for job, reply in zip(chunk, replies))
    if batch_audit and audit is not None:
        created = [o for o in outcomes if isinstance(o, Enqueued) and o.created]
        if created:
            _queue_batch_audit(client, audit, requests, created, len(outcomes))
    return outcomes


# ---- preparing --------------------------------------------------------------------------------------------
def _prepare(requests: list[JobRequest], settings: Settings, indexed_errors: bool = True) -> list[Job]:
    jobs: list[Job] = []
    errors: list[dict[str, Any]] = []
    first: str | None = None
    for i, req in enumerate(requests):
        try:
            kwargs = req.payload if req.validated else validate_payload(req.family, req.payload, settings)
        except InvalidInput as exc:
            if not indexed_errors:  # a single enqueue names the field as its body has it
                raise
            for e in exc.errors or []:
                errors.append({**e, "field": f"jobs.{i}.{e['field']}" if e.get("field") else f"jobs.{i}"})
            first = first or f"job {i}: {exc.message}"
            continue
        spec = TASKS[req.family]
        queue = queue_for(spec.family, req.priority)
        job_id = str(uuid.uuid4())
        key = req.idempotency_key or None
        fingerprint = claim = ""  # only a key stores them (and is compared with them)
        if key:
            fingerprint = _fingerprint(spec.task, queue, kwargs)
            claim = json.dumps({"job_id": job_id, "fp": fingerprint}, separators=(",", ":"))
        headers = {"vigil_idempotency_key": key} if key else {}
        jobs.append(Job(req.family, spec.task, queue, kwargs, job_id, key, fingerprint, claim, headers))
    if errors:
        raise InvalidInput(f"Invalid batch: {first}", errors=errors)
    return jobs


# ---- outcomes ---------------------------------------------------------------------------------------------
def _outcome(job: Job, reply: list[Any]) -> Enqueued | Conflict:
    if int(reply[0]) == 1:
        return Enqueued(job.job_id, job.task, job.queue, created=True)
    existing, theirs = _claimed(reply[1])
    if theirs is not None and theirs != job.fingerprint:
        return _conflict(job.key or "", existing)
    return Enqueued(existing, job.task, job.queue, created=False)


def _conflict(key: str, existing: str) -> Conflict:
    return Conflict(
        f"Idempotency key '{key}' already names job {existing}, enqueued with another task, queue or payload; "
        "use a new key for a different job",
        code="idempotency_conflict",
        extra={"job_id": existing},
    )


def _queue_batch_audit(
    client: redis.Redis, audit: Audit, requests: list[JobRequest], created: list[Enqueued], total: int
) -> None:
    """One audit entry for a batch: who enqueued how many of which task, and their ids."""
    tasks: dict[str, int] = {}
    for req in requests:
        tasks[req.family] = tasks.get(req.family, 0) + 1
    details = {"jobs": total, "created": len(created), "tasks": tasks, "job_ids": [e.job_id for e in created]}
    entry = publish.audit_entry(audit, "jobs_enqueued", "job_batch", created[0].job_id, details, time.time())
    try:
        client.rpush(AUDIT_KEY, entry)
    except redis.RedisError:
        log.warning("the audit entry of a batch of %d jobs could not be queued", len(created), exc_info=True)


# ---- the general path: separate round trips --------------------------------------------------------------
def _publish_separately(job: Job, ttl: int, settings: Settings, audit: Audit | None) -> Enqueued | Conflict:
    """Key, Celery's own publish (its signal writes the registry), SQL audit row: for a broker on
    another database than the registry, where no one script can write both."""
    if job.key:
        client = get_redis(settings)
        key = IDEMPOTENCY_KEY + job.key
        try:
            if not client.set(key, job.claim, nx=True, ex=ttl):
                stored = client.get(key)
                if stored:
                    existing, theirs = _claimed(stored)
                    if theirs is not None and theirs != job.fingerprint:
                        return _conflict(job.key, existing)
                    return Enqueued(existing, job.task, job.queue, created=False)
                client.set(key, job.claim, ex=ttl)  # expired between the two calls
        except redis.RedisError as exc:
            raise Unavailable(f"Redis is unavailable: {exc}", code="broker_unavailable") from None
    publish.send(job, settings)
    if audit is not None:
        record_audit(
            "job_enqueued",
            "job",
            job.job_id,
            actor=audit.actor,
            details={"task": job.name, "queue": job.queue},
            ip_address=audit.ip_address,
            request_id=audit.request_id,
            settings=settings,
        )
    return Enqueued(job.job_id, job.task, job.queue, created=True)

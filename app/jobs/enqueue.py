"""Enqueueing work: payload schemas per task family, priority routing and idempotency.

The API's `POST /jobs`, the file watcher and the pipeline stages all enqueue through `enqueue`, so
every job is validated the same way and lands in the registry the same way.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import redis
from kombu.exceptions import OperationalError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from app.celery.queues import queue_for
from app.core.redis_client import KEY_PREFIX, get_redis
from app.core.errors import InvalidInput, Unavailable
from app.core.settings import Settings, get_settings
from app.celery.app import celery
from app.jobs.registry import get_registry

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
CAMERA_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
IDEMPOTENCY_KEY = KEY_PREFIX + "idem:"


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


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DetectionPayload(_Payload):
    camera_id: str = Field(description="Camera id (normalised folder name)")
    path: str = Field(description="Image path, absolute or relative to the camera root; must be inside it")
    file_hash: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the file")
    seen_at: float | None = Field(None, description="Epoch seconds the watcher saw the file complete")

    @field_validator("camera_id")
    @classmethod
    def _camera(cls, v: str) -> str:
        if not CAMERA_ID.match(v):
            raise ValueError("must be lower-case letters, digits, '_' or '-' (at most 64)")
        return v

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
    camera_id: str | None = None


class NotificationPayload(_Payload):
    channel: Literal["email", "webhook"]
    recipients: list[str] = Field(default_factory=list, max_length=100,
                                  description="E-mail addresses (email channel)")
    url: str | None = Field(None, max_length=2048, pattern=r"^https?://",
                            description="Webhook URL (webhook channel)")
    subject: str = Field("Vigil alert", max_length=200)
    message: str = Field(min_length=1, max_length=10000)
    event_id: int | None = None
    alert_id: str | None = None
    alert: dict[str, Any] | None = Field(None, description="An alert's facts, sent as JSON to a webhook")

    @field_validator("recipients")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if not re.match(r"^[^@\s<>]+@[^@\s<>]+$", a)]
        if bad:
            raise ValueError(f"not e-mail addresses: {bad[:3]}")
        return v

    @model_validator(mode="after")
    def _destination(self) -> "NotificationPayload":
        if self.channel == "email" and not self.recipients:
            raise ValueError("the email channel needs recipients")
        if self.channel == "webhook" and not self.url:
            raise ValueError("the webhook channel needs a url")
        return self


class AlertsPayload(_Payload):
    event_id: int = Field(ge=1, description="The scored event whose alert rules to evaluate")


class CleanupPayload(_Payload):
    dry_run: bool = False


@dataclass(frozen=True)
class TaskSpec:
    family: str
    task: str
    payload: type[BaseModel]


TASKS: dict[str, TaskSpec] = {
    "detection": TaskSpec("detection", "vigil.detection.detect", DetectionPayload),
    "analysis": TaskSpec("analysis", "vigil.analysis.analyze", AnalysisPayload),
    "notification": TaskSpec("notification", "vigil.notification.send", NotificationPayload),
    "alerts": TaskSpec("notification", "vigil.notification.fire_alerts", AlertsPayload),
    "cleanup": TaskSpec("cleanup", "vigil.cleanup.run", CleanupPayload),
}


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
        raise InvalidInput(f"Unknown task '{family}'; expected one of {', '.join(TASKS)}",
                           errors=[{"location": "body", "field": "task", "message": "unknown task"}])
    try:
        model = spec.payload.model_validate(payload, context={"camera_root": settings.camera_root})
    except ValidationError as exc:
        errors = [{"location": "body", "field": ".".join(["payload", *(str(p) for p in e["loc"])]),
                   "message": e["msg"], "type": e["type"]} for e in exc.errors(include_url=False)]
        first = errors[0]
        raise InvalidInput(f"Invalid payload for task '{family}': field '{first['field']}': {first['message']}",
                           errors=errors) from None
    return model.model_dump(mode="json", exclude_none=True)


def enqueue(family: str, payload: dict[str, Any], *, priority: str = "normal", idempotency_key: str | None = None,
            idempotency_ttl: int | None = None, settings: Settings | None = None,
            validated: bool = False) -> Enqueued:
    """Validate, route and publish one job; return once the broker holds the message.

    With an idempotency key, the first caller's job id is stored (SET NX) before publishing, so a
    concurrent or repeated call with the same key gets that job back and publishes nothing.
    """

    settings = settings or get_settings()
    spec = TASKS[family] if family in TASKS else None
    kwargs = payload if validated else validate_payload(family, payload, settings)
    assert spec is not None
    queue = queue_for(spec.family, priority)
    job_id = str(uuid.uuid4())
    headers: dict[str, Any] = {}
    if idempotency_key:
        client = get_redis(settings)
        key = IDEMPOTENCY_KEY + idempotency_key
        ttl = idempotency_ttl or settings.idempotency_ttl
        try:
            if not client.set(key, job_id, nx=True, ex=ttl):
                existing = client.get(key)
                if existing:
                    return Enqueued(existing, spec.task, queue, created=False)
                client.set(key, job_id, ex=ttl)  # expired between the two calls
        except redis.RedisError as exc:
            raise Unavailable(f"Redis is unavailable: {exc}", code="broker_unavailable") from None
        headers["vigil_idempotency_key"] = idempotency_key
    try:
        celery.send_task(spec.task, kwargs=kwargs, queue=queue, task_id=job_id, headers=headers)
    except Exception as exc:
        _undo(job_id, idempotency_key, settings)
        if isinstance(exc, (OperationalError, redis.RedisError, OSError)):
            raise Unavailable(f"The broker did not accept the job: {exc}", code="broker_unavailable") from None
        raise
    return Enqueued(job_id, spec.task, queue, created=True)


def _undo(job_id: str, idempotency_key: str | None, settings: Settings) -> None:
    """A publish failed: the registry (and the idempotency key) must not claim a job that is not
    queued. Best effort: Redis may be what failed."""

    try:
        if idempotency_key:
            get_redis(settings).delete(IDEMPOTENCY_KEY + idempotency_key)
        get_registry(settings).forget(job_id)
    except redis.RedisError:
        pass


def declare_queues() -> None:
    """Declare every queue and its binding on the broker once, so a publish can never be dropped
    for want of a binding (kombu's Redis transport discards unroutable messages silently)."""

    with celery.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in celery.conf.task_queues:
            queue(channel).declare()

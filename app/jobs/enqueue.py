"""Enqueueing work: payload schemas per task family, priority routing and idempotency.

The API's `POST /jobs`, the file watcher and the pipeline stages all enqueue through `enqueue`, so
every job is validated the same way and lands in the registry the same way.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import redis
from kombu.exceptions import OperationalError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator

from app.celery.app import celery
from app.celery.queues import queue_for
from app.core.errors import Conflict, InvalidInput, Unavailable
from app.core.redis_client import KEY_PREFIX, get_redis
from app.core.settings import Settings, get_settings
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


def enqueue(
    family: str,
    payload: dict[str, Any],
    *,
    priority: str = "normal",
    idempotency_key: str | None = None,
    idempotency_ttl: int | None = None,
    settings: Settings | None = None,
    validated: bool = False,
) -> Enqueued:
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
        fingerprint = _fingerprint(spec.task, queue, kwargs)
        claim = json.dumps({"job_id": job_id, "fp": fingerprint}, separators=(",", ":"))
        try:
            if not client.set(key, claim, nx=True, ex=ttl):
                stored = client.get(key)
                if stored:
                    existing, theirs = _claimed(stored)
                    if theirs is not None and theirs != fingerprint:
                        raise Conflict(
                            f"Idempotency key '{idempotency_key}' already names job {existing}, "
                            "enqueued with another task, queue or payload; use a new key for a "
                            "different job",
                            code="idempotency_conflict",
                            extra={"job_id": existing},
                        )
                    return Enqueued(existing, spec.task, queue, created=False)
                client.set(key, claim, ex=ttl)  # expired between the two calls
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

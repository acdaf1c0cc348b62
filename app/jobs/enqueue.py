"""Enqueueing work: payload schemas per task family, priority routing and idempotency.

The API's `POST /jobs`, the file watcher and the pipeline stages all enqueue through `enqueue`, so
every job is validated the same way and lands in the registry the same way.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import redis
from celery import signals
from celery.utils.saferepr import saferepr
from kombu.exceptions import OperationalError
from kombu.utils import json as kombu_json
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.celery.app import celery
from app.celery.queues import queue_for
from app.core.context import request_id_var
from app.core.errors import Conflict, InvalidInput, Unavailable
from app.core.redis_client import KEY_PREFIX, get_redis
from app.core.settings import Settings, get_settings
from app.jobs.registry import ARCHIVE_KEY, AUDIT_KEY, INDEX_KEY, JOB_KEY, LUA_APPLY, JobRegistry, get_registry
from app.jobs.signals import publish_capture
from app.observability.audit import Audit
from app.observability.audit import record as record_audit
from app.observability.metrics import JOBS_PUBLISHED

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class JobRequest:
    """One job to enqueue, as `enqueue` takes it; `enqueue_many` takes a list of them."""

    family: str
    payload: dict[str, Any]
    priority: str = "normal"
    idempotency_key: str | None = None
    validated: bool = False  # `payload` is already `validate_payload`'s output


@dataclass
class _Job:
    spec: TaskSpec
    queue: str
    kwargs: dict[str, Any]
    job_id: str
    key: str | None
    fingerprint: str
    claim: str
    headers: dict[str, Any]
    fields: dict[str, Any] | None = None  # the registry's publish record, from the publish signal
    commands: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)


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
    pushes its message atomically, and a pipeline carries `PIPELINE_CHUNK` of them per round trip;
    no SQL is written (the audit entry waits in Redis for the registry archiver). Otherwise each job
    is published as before: key, then Celery's publish, then the audit row.
    """
    settings = settings or get_settings()
    ttl = idempotency_ttl or settings.idempotency_ttl
    jobs = _prepare(requests, settings, indexed_errors)
    if not _one_database(settings):
        return [_publish_separately(job, ttl, settings, audit) for job in jobs]
    try:
        _capture(jobs)
    except _NotCapturable:
        return [_publish_separately(job, ttl, settings, audit) for job in jobs]
    except (OperationalError, redis.RedisError, OSError) as exc:  # no broker connection to prepare on
        raise Unavailable(f"The broker did not accept the job: {exc}", code="broker_unavailable") from None
    client = _publish_client(settings.redis_url)
    outcomes: list[Enqueued | Conflict] = []
    for start in range(0, len(jobs), PIPELINE_CHUNK):
        chunk = jobs[start : start + PIPELINE_CHUNK]
        outcomes.extend(_run_scripts(client, chunk, ttl, None if batch_audit else audit, settings))
    if batch_audit and audit is not None:
        created = [o for o in outcomes if isinstance(o, Enqueued) and o.created]
        if created:
            _queue_batch_audit(client, audit, requests, created, len(outcomes))
    return outcomes


# ---- preparing --------------------------------------------------------------------------------------------
def _prepare(requests: list[JobRequest], settings: Settings, indexed_errors: bool = True) -> list[_Job]:
    jobs: list[_Job] = []
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
        fingerprint = _fingerprint(spec.task, queue, kwargs)
        claim = json.dumps({"job_id": job_id, "fp": fingerprint}, separators=(",", ":"))
        headers = {"vigil_idempotency_key": req.idempotency_key} if req.idempotency_key else {}
        jobs.append(_Job(spec, queue, kwargs, job_id, req.idempotency_key or None, fingerprint, claim, headers))
    if errors:
        raise InvalidInput(f"Invalid batch: {first}", errors=errors)
    return jobs


def _one_database(settings: Settings) -> bool:
    """Whether broker, registry and idempotency keys live in one Redis database, so one script can
    write all three. The registry is written on the process's own settings (app/jobs/signals.py)."""
    return settings.redis_url == celery.conf.broker_url == get_settings().redis_url


class _NotCapturable(Exception):
    """kombu did not hand over a message as expected (another transport, a key prefix)."""


# Redis commands a kombu Redis channel issues for a publish (`_put`, `_put_fanout`, our doorbell):
# the script runs them, and nothing else.
_PUBLISH_COMMANDS = frozenset({"lpush", "rpush", "ltrim", "pexpire", "publish"})


class _Capture:
    """Stands in for kombu's Redis publish batch on one producer (`Producer._batch_local.current`,
    kombu 5.7): kombu prepares each message exactly as it would publish it and calls
    `basic_publish(..., _publish_batch=self)`, whose `_put` hands over its final Redis commands
    through `add` instead of sending them. The job's registry record arrives the same way from the
    publish signal. Nothing reaches Redis here; the enqueue script sends it all."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, tuple[Any, ...]]] = []
        self.records: dict[str, dict[str, Any]] = {}

    def publish(self, channel: Any, message: Any, **kwargs: Any) -> None:
        if getattr(channel, "global_keyprefix", ""):
            raise _NotCapturable("a global key prefix applies to every key")
        channel.basic_publish(message, _publish_batch=self, **kwargs)

    def add(self, name: str, *args: Any) -> None:
        if name not in _PUBLISH_COMMANDS:
            raise _NotCapturable(f"unexpected publish command {name}")
        self.commands.append((name, args))

    def record(self, job_id: str, fields: dict[str, Any]) -> None:
        self.records[job_id] = fields


_declared: dict[int, set[str]] = {}  # pid -> queues declared on the broker by this process


def _capture(jobs: list[_Job]) -> None:
    """Each job's message and registry record, prepared by Celery and kombu, not sent."""
    capture = _Capture()
    token = publish_capture.set(capture.record)
    try:
        with celery.producer_or_acquire() as producer:
            if getattr(producer._batch_local, "current", None) is not None:
                raise _NotCapturable("the producer is inside a publish batch")
            producer._batch_local.current = capture
            try:
                templates: dict[tuple[str, str, bool], _Template | None] = {}
                for job in jobs:
                    group = (job.spec.task, job.queue, bool(job.key))
                    template = templates.get(group)
                    if template is not None and template.fill(job):
                        continue
                    capture.commands = []
                    # Queues are declared (kombu's maybe_declare) on this process's first publish to
                    # each; after that, declaring again per message only copied the Queue entity.
                    declared = job.queue in _declared.get(os.getpid(), ())
                    celery.send_task(
                        job.spec.task,
                        kwargs=job.kwargs,
                        queue=job.queue,
                        task_id=job.job_id,
                        headers=job.headers,
                        producer=producer,
                        retry=False,
                        declare=[] if declared else None,
                    )
                    if not declared:
                        _declared.setdefault(os.getpid(), set()).add(job.queue)
                    if not any(name == "lpush" for name, _ in capture.commands):
                        raise _NotCapturable("no message was captured")
                    job.commands = capture.commands
                    job.fields = capture.records.pop(job.job_id, None)
                    if group not in templates:
                        templates[group] = _Template.of(job)
            finally:
                del producer._batch_local.current
    finally:
        publish_capture.reset(token)


class _Template:
    """The message Celery and kombu prepared for one job, reused for the other jobs of one request
    with the same task, queue and key-or-not: only the job id, the delivery tag, the keyword
    arguments (body, `kwargsrepr`) and the idempotency key differ between them, and preparing them
    again through `send_task` was most of a batch's time (bench P12). Built only when re-deriving the
    captured job's own message from it gives that message back exactly, and only while the publish
    signals have no receivers but the registry's and the job metrics'; otherwise every job goes
    through `send_task`."""

    def __init__(self, message: dict[str, Any], commands: list[tuple[str, tuple[Any, ...]]], fields: dict[str, Any]):
        self.message = message
        self.rest = commands[1:]
        self.list_key = commands[0][1][0]
        self.fields = fields
        args, _, embed = json.loads(base64.b64decode(message["body"]))
        self.args, self.embed = args, embed

    @classmethod
    def of(cls, job: _Job) -> _Template | None:
        commands = job.commands
        if (
            job.fields is None
            or len(signals.before_task_publish.receivers) != 2
            or signals.after_task_publish.receivers
            or not commands
            or commands[0][0] != "lpush"
            or any(name not in ("lpush", "ltrim") or args[0] == commands[0][1][0] for name, args in commands[1:])
        ):
            return None
        try:
            template = cls(json.loads(commands[0][1][1]), commands, job.fields)
            message, fields = template.derive(job, template.message["properties"]["delivery_tag"])
        except (ValueError, KeyError, TypeError, IndexError):
            return None
        if message != commands[0][1][1] or fields != job.fields:
            return None
        return template

    def derive(self, job: _Job, tag: str) -> tuple[str, dict[str, Any]]:
        message = dict(self.message)
        headers = message["headers"] = dict(self.message["headers"])
        headers["id"] = headers["root_id"] = job.job_id
        headers["kwargsrepr"] = saferepr(
            job.kwargs, celery.amqp.kwargsrepr_maxsize, maxlevels=celery.conf.task_repr_maxlevels
        )
        if job.key:
            headers["vigil_idempotency_key"] = job.key
        properties = message["properties"] = dict(self.message["properties"])
        properties["correlation_id"] = job.job_id
        properties["delivery_tag"] = tag
        body = kombu_json.dumps((self.args, job.kwargs, self.embed))
        message["body"] = base64.b64encode(body.encode("utf-8")).decode("ascii")
        fields = dict(self.fields)
        fields["kwargs"] = JobRegistry.publish_fields(task="", queue="", kwargs=job.kwargs)["kwargs"]
        fields["idempotency_key"] = job.key
        return kombu_json.dumps(message), fields

    def fill(self, job: _Job) -> bool:
        message, job.fields = self.derive(job, str(uuid.uuid4()))
        job.commands = [("lpush", (self.list_key, message)), *self.rest]
        JOBS_PUBLISHED.labels(job.queue, job.spec.task).inc()  # what the job metrics' receiver counts
        return True


# ---- publishing ---------------------------------------------------------------------------------------------
PIPELINE_CHUNK = 250  # jobs per round trip: big enough to amortise it, small enough not to stall Redis

# The registry's `apply` (LUA_APPLY: KEYS[1] job hash, KEYS[2] archive; ARGV[1..3] index prefix, now,
# job id), then: KEYS[3] idempotency key, KEYS[4] audit backlog, KEYS[4 + c] the key of publish
# command c. ARGV[4] = n, ARGV[5 .. 4 + 2n] the publish record's fields, then the claim ('' without
# a key), its TTL, the audit entry ('' for none), the number of commands, and per command its name,
# its number of arguments after the key and those arguments. Returns {1} when published, {0, claim}
# when the key already names a job (nothing written).
_ENQUEUE = (
    LUA_APPLY
    + """
local n = tonumber(ARGV[4])
local i = 5 + 2 * n
local claim, ttl, audit, ncmd = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
if claim ~= '' then
  local held = redis.call('GET', KEYS[3])
  if held then return {0, held} end
  redis.call('SET', KEYS[3], claim, 'EX', ttl)
end
apply('publish', 5, 4 + 2 * n)
local j = i + 4
for c = 1, ncmd do
  local name, nargs = ARGV[j], tonumber(ARGV[j + 1])
  redis.call(name, KEYS[4 + c], unpack(ARGV, j + 2, j + 1 + nargs))
  j = j + 2 + nargs
end
if audit ~= '' then redis.call('RPUSH', KEYS[4], audit) end
return {1}
"""
)
_ENQUEUE_SHA = hashlib.sha1(_ENQUEUE.encode()).hexdigest()

_publish_clients: dict[str, redis.Redis] = {}


def _publish_client(url: str) -> redis.Redis:
    """A client that never retries by itself: a script whose reply was lost may have run, and
    running it again would queue the message twice (kombu's own batches refuse retrying clients
    for the same reason). redis-py pools reset themselves after a fork."""
    client = _publish_clients.get(url)
    if client is None:
        client = _publish_clients[url] = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=2,
            health_check_interval=30,
            retry=Retry(NoBackoff(), 0),
        )
    return client


def _script_call(job: _Job, ttl: int, audit: Audit | None, now: float) -> list[Any]:
    fields = job.fields
    if fields is None:  # the publish signal's receiver failed (it logged why): the same record
        fields = JobRegistry.publish_fields(
            task=job.spec.task,
            queue=job.queue,
            kwargs=job.kwargs,
            request_id=request_id_var.get(),
            idempotency_key=job.key,
        )
    pairs = [(k, v) for k, v in fields.items() if v is not None]
    keys = [JOB_KEY + job.job_id, ARCHIVE_KEY, IDEMPOTENCY_KEY + (job.key or ""), AUDIT_KEY]
    argv: list[Any] = [INDEX_KEY, repr(now), job.job_id, len(pairs)]
    for k, v in pairs:
        argv.extend((k, v))
    entry = ""
    if audit is not None:
        entry = _audit_entry(
            audit, "job_enqueued", "job", job.job_id, {"task": _family_name(job), "queue": job.queue}, now
        )
    argv.extend((job.claim if job.key else "", ttl, entry, len(job.commands)))
    for name, (key, *rest) in job.commands:
        keys.append(key)
        argv.extend((name, len(rest), *rest))
    return [_ENQUEUE_SHA, len(keys), *keys, *argv]


def _family_name(job: _Job) -> str:
    return next((name for name, spec in TASKS.items() if spec is job.spec), job.spec.family)


def _run_scripts(
    client: redis.Redis, jobs: list[_Job], ttl: int, audit: Audit | None, settings: Settings
) -> list[Enqueued | Conflict]:
    now = time.time()
    calls = [_script_call(job, ttl, audit, now) for job in jobs]
    replies: list[Any] = [None] * len(jobs)
    todo = list(range(len(jobs)))
    try:
        for attempt in range(2):
            with client.pipeline(transaction=False) as pipe:
                for i in todo:
                    pipe.evalsha(*calls[i])
                results = pipe.execute(raise_on_error=False)
            missing = []
            for i, result in zip(todo, results):
                if isinstance(result, redis.exceptions.NoScriptError):
                    missing.append(i)  # the script never ran: nothing was written for this job
                elif isinstance(result, Exception):
                    raise result
                else:
                    replies[i] = result
            if not missing:
                break
            if attempt == 1:
                raise RuntimeError("Redis keeps forgetting the enqueue script")
            client.script_load(_ENQUEUE)
            todo = missing
    except (redis.RedisError, OSError) as exc:
        for job, reply in zip(jobs, replies):
            if reply is None:
                _undo(job.job_id, job.key, job.claim, settings)
        raise Unavailable(f"The broker did not accept the job: {exc}", code="broker_unavailable") from None
    return [_outcome(job, reply) for job, reply in zip(jobs, replies)]


def _outcome(job: _Job, reply: list[Any]) -> Enqueued | Conflict:
    if int(reply[0]) == 1:
        return Enqueued(job.job_id, job.spec.task, job.queue, created=True)
    existing, theirs = _claimed(reply[1])
    if theirs is not None and theirs != job.fingerprint:
        return _conflict(job.key or "", existing)
    return Enqueued(existing, job.spec.task, job.queue, created=False)


def _conflict(key: str, existing: str) -> Conflict:
    return Conflict(
        f"Idempotency key '{key}' already names job {existing}, enqueued with another task, queue or payload; "
        "use a new key for a different job",
        code="idempotency_conflict",
        extra={"job_id": existing},
    )


def _audit_entry(
    audit: Audit, action: str, resource_type: str, resource_id: str | None, details: dict[str, Any], now: float
) -> str:
    return json.dumps(
        {
            "at": now,
            "action": action,
            "resource_type": resource_type,
            "resource_id": resource_id,
            "actor": audit.actor,
            "details": details,
            "ip_address": audit.ip_address,
            "request_id": audit.request_id,
        },
        separators=(",", ":"),
    )


def _queue_batch_audit(
    client: redis.Redis, audit: Audit, requests: list[JobRequest], created: list[Enqueued], total: int
) -> None:
    """One audit entry for a batch: who enqueued how many of which task, and their ids."""
    tasks: dict[str, int] = {}
    for req in requests:
        tasks[req.family] = tasks.get(req.family, 0) + 1
    details = {"jobs": total, "created": len(created), "tasks": tasks, "job_ids": [e.job_id for e in created]}
    entry = _audit_entry(audit, "jobs_enqueued", "job_batch", created[0].job_id, details, time.time())
    try:
        client.rpush(AUDIT_KEY, entry)
    except redis.RedisError:
        log.warning("the audit entry of a batch of %d jobs could not be queued", len(created), exc_info=True)


# ---- the general path: separate round trips --------------------------------------------------------------
def _publish_separately(job: _Job, ttl: int, settings: Settings, audit: Audit | None) -> Enqueued | Conflict:
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
                    return Enqueued(existing, job.spec.task, job.queue, created=False)
                client.set(key, job.claim, ex=ttl)  # expired between the two calls
        except redis.RedisError as exc:
            raise Unavailable(f"Redis is unavailable: {exc}", code="broker_unavailable") from None
    try:
        celery.send_task(job.spec.task, kwargs=job.kwargs, queue=job.queue, task_id=job.job_id, headers=job.headers)
    except Exception as exc:
        _undo(job.job_id, job.key, job.claim, settings)
        if isinstance(exc, (OperationalError, redis.RedisError, OSError)):
            raise Unavailable(f"The broker did not accept the job: {exc}", code="broker_unavailable") from None
        raise
    if audit is not None:
        record_audit(
            "job_enqueued",
            "job",
            job.job_id,
            actor=audit.actor,
            details={"task": _family_name(job), "queue": job.queue},
            ip_address=audit.ip_address,
            request_id=audit.request_id,
            settings=settings,
        )
    return Enqueued(job.job_id, job.spec.task, job.queue, created=True)


def _undo(job_id: str, idempotency_key: str | None, claim: str | None, settings: Settings) -> None:
    """A publish failed: the registry (and the idempotency key) must not claim a job that is not
    queued. Best effort: Redis may be what failed. The key is only removed while it holds this
    job's own claim."""

    try:
        if idempotency_key:
            client = get_redis(settings)
            key = IDEMPOTENCY_KEY + idempotency_key
            if claim is None or client.get(key) == claim:
                client.delete(key)
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

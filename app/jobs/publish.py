"""Publishing prepared jobs: the Celery/kombu message of each job, captured instead of sent, and
the one Lua script per job that claims its idempotency key, writes its registry record, pushes its
message and queues its audit entry in one round trip.

This is the broker-facing half of enqueueing; app/jobs/enqueue.py holds the request-facing half
(payload schemas, validation, routing, idempotency semantics, outcomes). The split follows what
changes together: everything here depends on how Celery 5.7 and kombu 5.7 shape and send a
message (the `_batch_local` publish batch, the message layout a template reproduces, the Redis
commands of a kombu publish), and nothing in enqueue.py does. A `Job` is what enqueue.py hands
over: already validated, routed and given its id, claim and headers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import signals
from celery.utils.saferepr import saferepr
from kombu.exceptions import OperationalError
from kombu.utils import json as kombu_json
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.celery.app import celery
from app.core.context import REQUEST_ID_HEADER, request_id_var
from app.core.errors import Unavailable
from app.core.redis_client import KEY_PREFIX, get_redis
from app.core.settings import Settings, get_settings
from app.jobs.registry import ARCHIVE_KEY, AUDIT_KEY, INDEX_KEY, JOB_KEY, LUA_APPLY, JobRegistry, get_registry
from app.jobs.signals import publish_capture
from app.observability.audit import Audit
from app.observability.metrics import JOBS_PUBLISHED

IDEMPOTENCY_KEY = KEY_PREFIX + "idem:"


@dataclass
class Job:
    """One job ready to publish: `name` is the task family as the request named it (the audit
    entry's `task`), `task` the Celery task, `claim` what its idempotency key stores and
    `fingerprint` what a later request with that key is compared with (both '' without a key)."""

    name: str
    task: str
    queue: str
    kwargs: dict[str, Any]
    job_id: str
    key: str | None
    fingerprint: str
    claim: str
    headers: dict[str, Any]
    fields: dict[str, Any] | None = None  # the registry's publish record, from the publish signal
    commands: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)


def one_database(settings: Settings) -> bool:
    """Whether broker, registry and idempotency keys live in one Redis database, so one script can
    write all three. The registry is written on the process's own settings (app/jobs/signals.py)."""
    return settings.redis_url == celery.conf.broker_url == get_settings().redis_url


class NotCapturable(Exception):
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
            raise NotCapturable("a global key prefix applies to every key")
        channel.basic_publish(message, _publish_batch=self, **kwargs)

    def add(self, name: str, *args: Any) -> None:
        if name not in _PUBLISH_COMMANDS:
            raise NotCapturable(f"unexpected publish command {name}")
        self.commands.append((name, args))

    def record(self, job_id: str, fields: dict[str, Any]) -> None:
        self.records[job_id] = fields


_declared: dict[int, set[str]] = {}  # pid -> queues declared on the broker by this process


def capture(jobs: list[Job]) -> None:
    """Each job's message and registry record, prepared by Celery and kombu (or derived from a
    verified `Template` of a message they prepared), not sent. NotCapturable when kombu does not
    hand them over as expected; Unavailable when there is no broker connection to prepare them on."""
    try:
        _capture(jobs)
    except (OperationalError, redis.RedisError, OSError) as exc:
        raise Unavailable(f"The broker did not accept the job: {exc}", code="broker_unavailable") from None


def _capture(jobs: list[Job]) -> None:
    request_id = request_id_var.get()
    reusable = _templates_apply()
    pid = os.getpid()
    todo: list[Job] = []
    for job in jobs:
        template = _templates.get(_group(pid, job, request_id)) if reusable else None
        if template is not None:
            template.fill(job, request_id)
        else:
            todo.append(job)
    if todo:
        _prepare_with_celery(todo, request_id, reusable)


def _prepare_with_celery(jobs: list[Job], request_id: str | None, reusable: bool) -> None:
    """Celery prepares the first job of each group; the group's template, once it is verified,
    derives the rest of them and every later request's."""
    capture = _Capture()
    token = publish_capture.set(capture.record)
    pid = os.getpid()
    tried: set[tuple[Any, ...]] = set()
    try:
        with celery.producer_or_acquire() as producer:
            if getattr(producer._batch_local, "current", None) is not None:
                raise NotCapturable("the producer is inside a publish batch")
            producer._batch_local.current = capture
            try:
                for job in jobs:
                    group = _group(pid, job, request_id)
                    template = _templates.get(group) if reusable else None
                    if template is not None:
                        template.fill(job, request_id)
                        continue
                    capture.commands = []
                    # Queues are declared (kombu's maybe_declare) on this process's first publish to
                    # each; after that, declaring again per message only copied the Queue entity.
                    declared = job.queue in _declared.get(pid, ())
                    celery.send_task(
                        job.task,
                        kwargs=job.kwargs,
                        queue=job.queue,
                        task_id=job.job_id,
                        headers=job.headers,
                        producer=producer,
                        retry=False,
                        declare=[] if declared else None,
                    )
                    if not declared:
                        _declared.setdefault(pid, set()).add(job.queue)
                    if not any(name == "lpush" for name, _ in capture.commands):
                        raise NotCapturable("no message was captured")
                    job.commands = capture.commands
                    job.fields = capture.records.pop(job.job_id, None)
                    if reusable and group not in tried:
                        tried.add(group)
                        template = Template.of(job, request_id)
                        if template is not None:
                            _templates[group] = template
            finally:
                del producer._batch_local.current
    finally:
        publish_capture.reset(token)


# Verified templates of this process, by `_group`: kept across requests, so that a single `POST /jobs`
# is derived from a message Celery prepared for an earlier one (bench P11). The process id is part
# of the key (a forked child's `origin` header differs); a template that failed verification is not
# kept, and its group is tried again on the next request.
_templates: dict[tuple[Any, ...], Template] = {}


def _group(pid: int, job: Job, request_id: str | None) -> tuple[Any, ...]:
    """What makes two jobs' messages differ in more than `Template.derive` substitutes: the
    process, task, queue, and whether the message carries an idempotency key and a request id
    (each adds a header, in Celery's order)."""
    return (pid, job.task, job.queue, bool(job.key), bool(request_id))


def _templates_apply() -> bool:
    """Whether a derived message is what `send_task` would publish now. Not inside a task: Celery
    then takes the root and parent ids from the running task and adds the job to its trail. Not
    while other publish receivers are connected than the registry's and the job metrics' (they
    would not see a derived message), nor with task-sent events on (an extra publish per job)."""
    return (
        len(signals.before_task_publish.receivers) == 2
        and not signals.after_task_publish.receivers
        and not signals.task_sent.receivers
        and not celery.conf.task_send_sent_event
        and celery.current_worker_task is None
    )


def forget_templates() -> None:
    """Drop every kept template (a test that changes how Celery shapes messages calls this)."""
    _templates.clear()


class Template:
    """The message Celery and kombu prepared for one job, reused for the other jobs of its group
    (`_group`), in this request and later ones: only the job id (also the root id and the
    correlation id), the delivery tag, the keyword arguments (body, `kwargsrepr`), the idempotency
    key, the request id and `reply_to` (Celery's per-thread id of the app) differ between them, and
    preparing them again through `send_task` was most of a batch's time (bench P12) and half of a
    single `POST /jobs` (bench P11). Built only when re-deriving the captured job's own message
    from it gives that message (and registry record) back exactly, and used only while
    `_templates_apply()`; otherwise every job goes through `send_task`.

    The message is kept serialised, cut at those values (`_SLOTS`, all strings): deriving one is
    joining the pieces with each value JSON-encoded as kombu's encoder writes a string, instead of
    serialising the whole message again."""

    def __init__(self, message: dict[str, Any], commands: list[tuple[str, tuple[Any, ...]]], fields: dict[str, Any]):
        self.rest = commands[1:]
        self.list_key = commands[0][1][0]
        self.fields = fields
        args, _, embed = json.loads(base64.b64decode(message["body"]))
        self.args, self.embed = args, embed
        self.counter = JOBS_PUBLISHED.labels(fields["queue"], fields["task"])
        self.maxsize, self.maxlevels = celery.amqp.kwargsrepr_maxsize, celery.conf.task_repr_maxlevels
        # The message with a unique mark in place of each slot's value, serialised once and cut there.
        mark = f"vigil-slot-{uuid.uuid4().hex}-"
        skeleton = dict(message)
        headers = skeleton["headers"] = dict(message["headers"])
        properties = skeleton["properties"] = dict(message["properties"])
        slots = [name for name in _SLOTS if name in headers or name in properties or name == "body"]
        for name in slots:
            where = skeleton if name == "body" else headers if name in headers else properties
            where[name] = mark + name
        text = kombu_json.dumps(skeleton)
        found = sorted((text.index(_encode(mark + name)), name) for name in slots)
        if any(text.count(_encode(mark + name)) != 1 for name in slots):
            raise ValueError("a slot's mark is not in the message exactly once")
        self.order = [name for _, name in found]
        self.pieces: list[str] = []
        at = 0
        for start, name in found:
            self.pieces.append(text[at:start])
            at = start + len(_encode(mark + name))
        self.pieces.append(text[at:])

    @classmethod
    def of(cls, job: Job, request_id: str | None = None) -> Template | None:
        commands = job.commands
        if (
            job.fields is None
            or (job.fields.get("task"), job.fields.get("queue")) != (job.task, job.queue)
            or not _templates_apply()
            or not commands
            or commands[0][0] != "lpush"
            or any(name not in ("lpush", "ltrim") or args[0] == commands[0][1][0] for name, args in commands[1:])
        ):
            return None
        try:
            message = json.loads(commands[0][1][1])
            template = cls(message, commands, job.fields)
            derived, fields = template.derive(job, message["properties"]["delivery_tag"], request_id)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return None
        if derived != commands[0][1][1] or fields != job.fields:
            return None
        return template

    def derive(self, job: Job, tag: str, request_id: str | None) -> tuple[str, dict[str, Any]]:
        body = kombu_json.dumps((self.args, job.kwargs, self.embed))
        values = {
            "id": job.job_id,
            "root_id": job.job_id,
            "kwargsrepr": saferepr(job.kwargs, self.maxsize, maxlevels=self.maxlevels),
            "vigil_idempotency_key": job.key,
            REQUEST_ID_HEADER: request_id,  # what the registry's publish receiver adds (app/jobs/signals.py)
            "correlation_id": job.job_id,
            "reply_to": celery.thread_oid,
            "delivery_tag": tag,
            "body": base64.b64encode(body.encode("utf-8")).decode("ascii"),
        }
        pieces = self.pieces
        out = [pieces[0]]
        for i, name in enumerate(self.order, 1):
            out.append(_encode(values[name]))  # TypeError for a value that is not a string: no template
            out.append(pieces[i])
        fields = dict(self.fields)
        fields["kwargs"] = JobRegistry.publish_fields(task="", queue="", kwargs=job.kwargs)["kwargs"]
        fields["idempotency_key"] = job.key
        fields["request_id"] = request_id
        return "".join(out), fields

    def fill(self, job: Job, request_id: str | None) -> None:
        message, job.fields = self.derive(job, str(uuid.uuid4()), request_id)
        job.commands = [("lpush", (self.list_key, message)), *self.rest]
        self.counter.inc()  # what the job metrics' receiver counts


# The values a template substitutes: message headers, then properties, then the body.
_SLOTS = (
    "id",
    "root_id",
    "kwargsrepr",
    "vigil_idempotency_key",
    REQUEST_ID_HEADER,
    "correlation_id",
    "reply_to",
    "delivery_tag",
    "body",
)
# A string as json.dumps writes it with kombu's settings (ensure_ascii): refuses anything else.
_encode = json.encoder.encode_basestring_ascii


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


def publish_client(url: str) -> redis.Redis:
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


def _script_call(job: Job, ttl: int, audit: Audit | None, now: float) -> list[Any]:
    fields = job.fields
    if fields is None:  # the publish signal's receiver failed (it logged why): the same record
        fields = JobRegistry.publish_fields(
            task=job.task,
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
        entry = audit_entry(audit, "job_enqueued", "job", job.job_id, {"task": job.name, "queue": job.queue}, now)
    argv.extend((job.claim if job.key else "", ttl, entry, len(job.commands)))
    for name, (key, *rest) in job.commands:
        keys.append(key)
        argv.extend((name, len(rest), *rest))
    return [_ENQUEUE_SHA, len(keys), *keys, *argv]


def run_scripts(
    client: redis.Redis, jobs: list[Job], ttl: int, audit: Audit | None, settings: Settings
) -> list[list[Any]]:
    """Each job's script reply, in order: `[1]` when it was published, `[0, claim]` when its
    idempotency key already held `claim` (nothing written). On a broker error the jobs whose script
    did not answer are undone (`undo`) and Unavailable is raised."""
    now = time.time()
    calls = [_script_call(job, ttl, audit, now) for job in jobs]
    replies: list[Any] = [None] * len(jobs)
    todo = list(range(len(jobs)))
    try:
        for attempt in range(2):
            if len(todo) == 1:  # a single POST /jobs: the call itself, without a pipeline's bookkeeping
                try:
                    results = [client.evalsha(*calls[todo[0]])]
                except redis.exceptions.NoScriptError as exc:
                    results = [exc]
            else:
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
                undo(job.job_id, job.key, job.claim, settings)
        raise Unavailable(f"The broker did not accept the job: {exc}", code="broker_unavailable") from None
    return replies


def audit_entry(
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


def send(job: Job, settings: Settings) -> None:
    """Celery's own publish of `job` (its signal writes the registry record), for a broker the
    enqueue script cannot reach; a failed publish is undone and is Unavailable when the broker is
    what failed."""
    try:
        celery.send_task(job.task, kwargs=job.kwargs, queue=job.queue, task_id=job.job_id, headers=job.headers)
    except Exception as exc:
        undo(job.job_id, job.key, job.claim, settings)
        if isinstance(exc, (OperationalError, redis.RedisError, OSError)):
            raise Unavailable(f"The broker did not accept the job: {exc}", code="broker_unavailable") from None
        raise


def undo(job_id: str, idempotency_key: str | None, claim: str | None, settings: Settings) -> None:
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

"""The agents of the AI Monitoring API: each AI service the pipeline calls, together with the Celery pool that calls it.

| id               | service (backend, breaker) | pool (supervised group) | queues                      |
| ---------------- | -------------------------- | ----------------------- | --------------------------- |
| `agent_detector` | `detector`                 | `detection_worker`      | `detection:high`, `detection` |
| `agent_analyser` | `analyser`                 | `analysis_worker`       | `analysis`                  |

An agent's status is read from what the system already publishes, in a handful of Redis calls:
`paused` when every one of its queues is paused; `starting` while the supervisor restarts it (its worker
state `restarting`: a restart or start under way, until every node's fresh heartbeat shows it consuming);
`stopping` while an operator's stop is under way (the supervisor holds it `stopped` with `manual_stop`) and the
pool's live heartbeats still show it consuming the agent's queues or running jobs (a stopped pool finishes
the jobs it has); `offline` when its pool has no live heartbeat, or the supervisor holds it stopped or
failed and nothing runs; `degraded` when the service's breaker is not closed or more than
`DEGRADED_ERROR_RATE` % of its jobs failed over the last 15 minutes; else `healthy`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from app.celery.broker import Broker
from app.core.db import session_scope
from app.core.errors import NotFound
from app.core.redis_client import KEY_PREFIX, get_broker_redis, get_redis
from app.core.settings import Settings
from app.core.time import iso_utc
from app.jobs import heartbeats
from app.jobs.queues import PAUSED_KEY
from app.jobs.registry import get_registry
from app.monitoring import rollups
from app.ops import supervisor
from app.pipeline.ai.analysers import get_analyser
from app.pipeline.ai.breakers import breaker
from app.pipeline.ai.detectors import get_detector

PAUSE_KEY = KEY_PREFIX + "monitoring:paused:"  # + agent id: JSON {paused_at, resume_at, reason, by}
DEGRADED_ERROR_RATE = 5.0
DEGRADED_MIN_REQUESTS = 10
STATUSES = ("healthy", "degraded", "offline", "paused", "starting", "stopping")


@dataclass(frozen=True)
class AgentSpec:
    id: str
    name: str
    type: str
    service: str  # the breaker and backend name
    group: str  # the supervised Celery worker group
    queues: tuple[str, ...]
    retry_count: int  # the task's max_retries (workers/tasks/detection.py, analysis.py)


AGENTS: dict[str, AgentSpec] = {
    "agent_detector": AgentSpec(
        "agent_detector",
        "Object detector",
        "object_detector",
        "detector",
        "detection_worker",
        ("detection:high", "detection"),
        12,
    ),
    "agent_analyser": AgentSpec(
        "agent_analyser", "Risk analyser", "risk_analyser", "analyser", "analysis_worker", ("analysis",), 3
    ),
}


def in_tenant(settings: Settings, tenant_id: str | None) -> bool:
    """Whether a `tenant_id` filter names this installation's one tenant (VIGIL_TENANT_ID): Vigil is
    single-tenant, so every agent belongs to it and any other tenant has none. No filter: this one."""
    return tenant_id is None or tenant_id.strip().lower() == settings.tenant_id.strip().lower()


def require(agent_id: str) -> AgentSpec:
    spec = AGENTS.get(agent_id)
    if spec is None:
        raise NotFound(f"No agent '{agent_id[:80]}'; agents are: {', '.join(AGENTS)}", code="agent_not_found")
    return spec


def backend(spec: AgentSpec, settings: Settings) -> Any:
    return get_detector(settings) if spec.service == "detector" else get_analyser(settings)


def models(spec: AgentSpec, settings: Settings) -> tuple[str, str | None]:
    """(primary, fallback) model of an agent, as configured."""
    if spec.service == "detector":
        primary = "builtin" if settings.detector_backend == "builtin" else f"http:{settings.detector_url}"
        return primary, None
    if settings.analyser_backend == "llm":
        return settings.llm_model, ("builtin" if settings.analysis_fallback else None)
    return "builtin", None


def version(spec: AgentSpec, settings: Settings) -> str:
    """The backend and its model: `builtin`, `http`, `llm:<model>`."""
    primary, _ = models(spec, settings)
    if spec.service == "detector":
        return settings.detector_backend
    return f"llm:{primary}" if settings.analyser_backend == "llm" else "builtin"


def timeout_ms(spec: AgentSpec, settings: Settings) -> int:
    seconds = settings.detector_timeout if spec.service == "detector" else settings.llm_timeout
    return int(seconds * 1000)


@dataclass
class LiveState:
    """What Redis says about every agent right now (one read for all of them)."""

    paused_queues: set[str]
    beats: dict[str, list[dict[str, Any]]]  # group -> live heartbeats
    workers: dict[str, dict[str, Any]]  # supervisor state by worker name
    breakers: dict[str, dict[str, Any]]
    pauses: dict[str, dict[str, Any]]

    def pool(self, spec: AgentSpec) -> list[dict[str, Any]]:
        return self.beats.get(spec.group, [])

    def concurrency(self, spec: AgentSpec) -> int:
        return sum(int(b.get("concurrency") or 0) for b in self.pool(spec))


def live_state(settings: Settings) -> LiveState:
    client = get_redis(settings)
    now = time.time()
    with client.pipeline(transaction=False) as pipe:
        pipe.smembers(PAUSED_KEY)
        pipe.zrangebyscore(heartbeats.HB_INDEX, now - settings.heartbeat_ttl, "+inf")
        pipe.hgetall(supervisor.STATE_KEY)
        for agent_id in AGENTS:
            pipe.get(PAUSE_KEY + agent_id)
        paused, nodes, workers_raw, *pause_raw = pipe.execute()
    beats = heartbeats.by_group(heartbeats.load(client, nodes))
    workers = {}
    for name, raw in workers_raw.items():
        try:
            workers[name] = json.loads(raw)
        except ValueError:
            continue
    pauses = {}
    for agent_id, raw in zip(AGENTS, pause_raw):
        if raw:
            try:
                pauses[agent_id] = json.loads(raw)
            except ValueError:
                pass
    breakers = {}
    for spec in AGENTS.values():
        try:
            breakers[spec.service] = breaker(spec.service, settings, client).snapshot()
        except redis.RedisError:
            breakers[spec.service] = {"state": "unknown"}
    return LiveState(set(paused), beats, workers, breakers, pauses)


def is_paused(spec: AgentSpec, live: LiveState) -> bool:
    return all(q in live.paused_queues for q in spec.queues)


def status_of(spec: AgentSpec, live: LiveState, recent: rollups.Counts | None) -> tuple[str, list[dict[str, str]]]:
    """The agent's status and the issues behind it (for `issues` and the dashboard's `top_issues`)."""
    issues: list[dict[str, str]] = []
    worker = live.workers.get(spec.group) or {}
    sup = worker.get("status")
    if is_paused(spec, live):
        pause = live.pauses.get(spec.id) or {}
        reason = pause.get("reason") or "paused by an operator"
        issues.append({"type": "paused", "message": f"Queues {', '.join(spec.queues)} paused: {reason}"})
        return "paused", issues
    if sup == "restarting":
        return "starting", [{"type": "restarting", "message": f"The {spec.group} pool is restarting"}]
    if sup == "stopped" and worker.get("manual_stop") and live.pool(spec):
        consuming = sorted({q for b in live.pool(spec) for q in b.get("queues") or [] if q in spec.queues})
        running = sum(int(b.get("active") or 0) for b in live.pool(spec))
        if consuming or running:
            what = f"still consuming {', '.join(consuming)}" if consuming else f"finishing {running} running job(s)"
            return "stopping", [{"type": "stopping", "message": f"The {spec.group} pool is stopping: {what}"}]
    if sup in ("stopped", "failed") or not live.pool(spec):
        why = f"supervisor reports {spec.group} {sup}" if sup in ("stopped", "failed") else "no live heartbeat"
        return "offline", [{"type": "offline", "message": f"The {spec.group} pool is offline: {why}"}]
    state = (live.breakers.get(spec.service) or {}).get("state")
    if state in ("open", "half_open"):
        last = (live.breakers.get(spec.service) or {}).get("last_error") or "consecutive failures"
        issues.append({"type": "circuit_open", "message": f"The {spec.service} breaker is {state}: {last}"[:300]})
    if recent and recent.requests >= DEGRADED_MIN_REQUESTS and recent.error_rate > DEGRADED_ERROR_RATE:
        issues.append(
            {"type": "high_error_rate", "message": f"{recent.error_rate:.1f}% of jobs failed in the last 15 minutes"}
        )
    return ("degraded" if issues else "healthy"), issues


def _uptime(beats: list[dict[str, Any]], now: float) -> float:
    """Share of the last 24 h the pool has been up in its current run (100 once it has run a day)."""
    if not beats:
        return 0.0
    started = min(float(b.get("started_at") or now) for b in beats)
    return round(min(100.0, 100.0 * (now - started) / 86400), 2)


def summaries(settings: Settings) -> list[dict[str, Any]]:
    """Every agent as GET /agents lists it: status, 24 h metrics from the hour rollups, heartbeats."""
    now = time.time()
    live = live_state(settings)
    h_start, h_end = rollups.window(rollups.HOUR, 86400, now)
    m_start, m_end = rollups.window(rollups.MINUTE, 900, now)
    with session_scope(settings) as session:
        day = rollups.aggregate(session, rollups.HOUR, h_start, h_end, "agent_id")
        recent = rollups.aggregate(session, rollups.MINUTE, m_start, m_end, "agent_id")
    out = []
    for spec in AGENTS.values():
        status, issues = status_of(spec, live, recent.get(spec.id))
        counts = day.get(spec.id) or rollups.Counts()
        pool = live.pool(spec)
        item: dict[str, Any] = {
            "id": spec.id,
            "name": spec.name,
            "type": spec.type,
            "status": status,
            "version": version(spec, settings),
            "metrics": {
                "uptime_percent": _uptime(pool, now),
                "requests_24h": counts.requests,
                "avg_latency_ms": counts.avg_ms,
                "error_rate": counts.error_rate,
            },
            "last_heartbeat": iso_utc(max((float(b.get("ts") or 0) for b in pool), default=None)),
            "started_at": iso_utc(min((float(b.get("started_at") or now) for b in pool), default=None)),
            "issues": issues,
        }
        out.append(item)
    return out


def _memory_check(pool: list[dict[str, Any]]) -> dict[str, Any]:
    """Resident memory of the pool's processes as a share of this machine's memory. Pools on another
    host (compose) are not visible from here: `unknown` then, not a guess."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a dependency
        return {"name": "memory_usage", "status": "unknown", "value": None}
    rss, found = 0, 0
    for beat in pool:
        for pid in [beat.get("pid"), *(beat.get("pool_pids") or [])]:
            try:
                rss += psutil.Process(int(pid)).memory_info().rss
                found += 1
            except (psutil.Error, TypeError, ValueError):
                continue
    if not found:
        return {"name": "memory_usage", "status": "unknown", "value": None}
    share = 100.0 * rss / psutil.virtual_memory().total
    return {
        "name": "memory_usage",
        "status": "pass" if share < 80 else "warn" if share < 90 else "fail",
        "value": f"{share:.1f}%",
    }


def detail(settings: Settings, agent_id: str) -> dict[str, Any]:
    """GET /agents/{id}: configuration, health checks, 24 h metrics by hour, recent errors, dependencies."""
    spec = require(agent_id)
    now = time.time()
    summary = next(a for a in summaries(settings) if a["id"] == agent_id)
    live = live_state(settings)
    h_start, h_end = rollups.window(rollups.HOUR, 86400, now)
    with session_scope(settings) as session:
        hours = rollups.aggregate(session, rollups.HOUR, h_start, h_end, "bucket", [agent_id])
        by_model = rollups.aggregate(session, rollups.HOUR, h_start, h_end, "model", [agent_id])
    counts = rollups.total(by_model.values())
    primary, fallback = models(spec, settings)
    impl = backend(spec, settings)
    t0 = time.perf_counter()
    ok, error = impl.probe(max(0.2, settings.health_timeout * 0.8))
    probe_ms = round((time.perf_counter() - t0) * 1000, 2)
    waiting = Broker(get_broker_redis(settings)).waiting_counts(list(spec.queues))
    depth = sum(waiting.values())
    checks = [
        {
            "name": "model_connection",
            "status": "pass" if ok else "fail",
            "latency_ms": probe_ms,
            "value": None if ok else error,
        },
        _memory_check(live.pool(spec)),
        {
            "name": "queue_depth",
            "status": "pass" if depth < 100 else "warn" if depth <= 1000 else "fail",
            "value": depth,
        },
    ]
    by_hour_requests, by_hour_latency = [], []
    for bucket in range(h_start, h_end, rollups.HOUR):
        cell = hours.get(bucket) or rollups.Counts()
        by_hour_requests.append({"timestamp": iso_utc(bucket), "total": cell.requests, "failed": cell.failures})
        by_hour_latency.append({"timestamp": iso_utc(bucket), "avg_ms": cell.avg_ms, "p95_ms": cell.percentile(95)})
    registry = get_registry(settings)
    failed: list[dict[str, Any]] = []
    for queue in spec.queues:
        failed.extend(registry.list(queue, "failed", limit=10)[1])
    failed.sort(key=lambda j: j.get("finished_at") or "", reverse=True)
    breaker_state = (live.breakers.get(spec.service) or {}).get("state", "unknown")
    service_status = "healthy" if ok and breaker_state == "closed" else "degraded" if ok else "offline"
    dependencies = [
        {"service": impl.url or f"{spec.service} (built-in)", "status": service_status},
        {"service": "redis (broker and registry)", "status": "healthy"},
    ]
    check_status = "healthy" if all(c["status"] in ("pass", "unknown") for c in checks) else "degraded"
    return {
        **{k: summary[k] for k in ("id", "name", "type", "status", "version")},
        "configuration": {
            "model_primary": primary,
            "model_fallback": fallback,
            "max_concurrent": live.concurrency(spec),
            "timeout_ms": timeout_ms(spec, settings),
            "retry_count": spec.retry_count,
        },
        "health": {"status": check_status, "last_check": iso_utc(now), "checks": checks},
        "metrics_detailed": {
            "requests": {
                "total": counts.requests,
                "successful": counts.successes,
                "failed": counts.failures,
                "by_hour": by_hour_requests,
            },
            "latency": {
                "avg_ms": counts.avg_ms,
                "p50_ms": counts.percentile(50),
                "p95_ms": counts.percentile(95),
                "p99_ms": counts.percentile(99),
                "by_hour": by_hour_latency,
            },
            "tokens": {
                "input": counts.input_tokens,
                "output": counts.output_tokens,
                "by_model": {
                    (m or "none"): {"input": c.input_tokens, "output": c.output_tokens, "requests": c.requests}
                    for m, c in sorted(by_model.items())
                },
            },
        },
        "recent_errors": [
            {
                "timestamp": j.get("finished_at"),
                "error": rollups.error_type(j.get("error")),
                "message": (j.get("error") or "failed")[:500],
                "request_id": j.get("request_id") or j["id"],
                "job_id": j["id"],
            }
            for j in failed[:10]
        ],
        "dependencies": dependencies,
        "pause": live.pauses.get(agent_id) if is_paused(spec, live) else None,
        "issues": summary["issues"],
    }

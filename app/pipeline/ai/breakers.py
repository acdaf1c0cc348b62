"""Circuit breakers for the AI services, with their state in Redis so every process shares it.

Why not a library: pybreaker (the maintained one) has the failure threshold, the recovery timeout
and a success threshold, and can keep its state in Redis, but (a) it has no limit on the calls a
half-open breaker lets through (we need 3), (b) its transitions are separate GET/SET calls, so two
workers can both decide to half-open or both miss the trip, and (c) it holds a process-wide lock
for the whole guarded call, serialising every API thread behind one slow model request. Each
transition here is one Lua call, so the detection workers, the analysis workers and the API
agree on one state, and a half-open breaker admits exactly `half_open_max_calls` trial calls
across all of them.

States and rules (System Operations API, "Circuit Breaker Pattern"):

    closed     calls pass; `failure_threshold` consecutive failures open it
    open       calls are refused at once (`CircuitOpenError`) until `recovery_seconds` passed
    half_open  at most `half_open_max_calls` trial calls; `success_threshold` successes close it,
               any failure opens it again

A call that the service *answered* with a client error (a 4xx: bad image, bad request) proves the
service is up: it is recorded as a success and never trips the breaker. Trial-call permits expire,
so a worker killed mid-call cannot leave a breaker half-open for ever.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from app.core.errors import InvalidInput, NotFound
from app.core.redis_client import KEY_PREFIX, get_redis
from app.core.settings import Settings
from app.core.time import iso_utc

T = TypeVar("T")

BREAKER_KEY = KEY_PREFIX + "breaker:"  # + name (hash), + name + ":permits" (zset)
NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")
STATES = ("closed", "open", "half_open")

# The AI services the pipeline calls, and so the breakers that exist (the System Monitoring guide and the System
# Operations API list them by name).
SERVICES = {
    "detector": "Object detection",
    "analyser": "Risk analysis",
}


class CircuitOpenError(RuntimeError):
    """The breaker refused the call; `retry_after` says when a trial call may be let through."""

    def __init__(self, name: str, retry_after: float):
        super().__init__(f"circuit breaker '{name}' is open; retry in {retry_after:.1f}s")
        self.name = name
        self.retry_after = retry_after


class ServiceRejected(RuntimeError):
    """The service answered, but refused this request (a 4xx). Not a sign the service is down."""


# KEYS[1] hash, KEYS[2] permits zset. ARGV: now, recovery, half_open_max, token, permit_ttl.
# Returns {verdict, state, retry_after}.
_ACQUIRE = """
local h, permits = KEYS[1], KEYS[2]
local now, recovery, maxcalls = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local token, ttl = ARGV[4], tonumber(ARGV[5])
local state = redis.call('HGET', h, 'state') or 'closed'
if state == 'open' then
  local opened = tonumber(redis.call('HGET', h, 'opened_at') or '0')
  if now - opened < recovery then
    return {'reject', state, tostring(opened + recovery - now)}
  end
  state = 'half_open'
  redis.call('HSET', h, 'state', state, 'half_open_successes', 0, 'last_state_change', ARGV[1])
  redis.call('DEL', permits)
end
if state == 'half_open' then
  redis.call('ZREMRANGEBYSCORE', permits, '-inf', now)
  local used = redis.call('ZCARD', permits) + tonumber(redis.call('HGET', h, 'half_open_successes') or '0')
  if used >= maxcalls then
    return {'reject', state, '1'}
  end
  redis.call('ZADD', permits, now + ttl, token)
end
return {'allow', state, '0'}
"""

# KEYS[1] hash, KEYS[2] permits. ARGV: now, outcome (success|failure), token, failure_threshold,
# success_threshold, error. Returns the state after the call.
_RECORD = """
local h, permits = KEYS[1], KEYS[2]
local now, outcome, token = ARGV[1], ARGV[2], ARGV[3]
local threshold, needed = tonumber(ARGV[4]), tonumber(ARGV[5])
local state = redis.call('HGET', h, 'state') or 'closed'
local held = redis.call('ZREM', permits, token)
redis.call('HSET', h, 'last_call', now)
if outcome == 'success' then
  redis.call('HINCRBY', h, 'success_count', 1)
  if state == 'half_open' and held == 1 then
    local n = redis.call('HINCRBY', h, 'half_open_successes', 1)
    if n >= needed then
      state = 'closed'
      redis.call('HSET', h, 'state', state, 'failure_count', 0, 'half_open_successes', 0, 'last_state_change', now)
      redis.call('DEL', permits)
    end
  elseif state == 'closed' then
    redis.call('HSET', h, 'failure_count', 0)
  end
else
  redis.call('HINCRBY', h, 'total_failures', 1)
  redis.call('HSET', h, 'last_failure', now, 'last_error', ARGV[6])
  if state == 'half_open' then
    state = 'open'
    redis.call('HSET', h, 'state', state, 'opened_at', now, 'last_state_change', now, 'half_open_successes', 0)
    redis.call('HINCRBY', h, 'failure_count', 1)
    redis.call('DEL', permits)
  elseif state == 'closed' then
    local n = redis.call('HINCRBY', h, 'failure_count', 1)
    if n >= threshold then
      state = 'open'
      redis.call('HSET', h, 'state', state, 'opened_at', now, 'last_state_change', now)
    end
  end
end
redis.call('HSETNX', h, 'state', state)
redis.call('HSETNX', h, 'last_state_change', now)
return state
"""

# KEYS[1] hash, KEYS[2] permits. ARGV: now. Returns the state before the reset.
_RESET = """
local previous = redis.call('HGET', KEYS[1], 'state') or 'closed'
redis.call('HSET', KEYS[1], 'state', 'closed', 'failure_count', 0, 'half_open_successes', 0,
           'last_state_change', ARGV[1])
redis.call('DEL', KEYS[2])
return previous
"""


@dataclass(frozen=True)
class BreakerConfig:
    failure_threshold: int = 5
    recovery_seconds: float = 30.0
    half_open_max_calls: int = 3
    success_threshold: int = 2
    permit_ttl: float = 300.0  # longer than any guarded call (the LLM timeout is 60 s)

    @classmethod
    def from_settings(cls, settings: Settings) -> BreakerConfig:
        return cls(
            settings.breaker_failure_threshold,
            settings.breaker_recovery_seconds,
            settings.breaker_half_open_max_calls,
            settings.breaker_success_threshold,
            max(300.0, settings.llm_timeout * 2, settings.detector_timeout * 2),
        )


class CircuitBreaker:
    """One named breaker. Cheap to create: all state is in Redis."""

    def __init__(
        self,
        name: str,
        client: redis.Redis,
        config: BreakerConfig,
        is_failure: Callable[[BaseException], bool] | None = None,
    ):
        self.name = name
        self.r = client
        self.config = config
        self.is_failure = is_failure or (lambda exc: not isinstance(exc, ServiceRejected))
        self.keys = [BREAKER_KEY + name, BREAKER_KEY + name + ":permits"]
        self._acquire = client.register_script(_ACQUIRE)
        self._record = client.register_script(_RECORD)
        self._reset = client.register_script(_RESET)

    def call(
        self, fn: Callable[..., T], *args: Any, record_on: redis.client.Pipeline | None = None, **kwargs: Any
    ) -> T:
        """Run `fn` if the breaker lets it; record the outcome. Raises `CircuitOpenError` when refused.

        `record_on`: a pipeline the caller sends after its own writes, to carry the success record,
        so a detection pays one round trip for its bookkeeping instead of one per kind (under a
        saturated CPU each synchronous round trip waits for Redis to be scheduled). A failure is
        recorded at once either way: the next call must see it."""
        token = uuid.uuid4().hex
        cfg = self.config
        verdict, _state, retry_after = self._acquire(
            keys=self.keys,
            args=[repr(time.time()), cfg.recovery_seconds, cfg.half_open_max_calls, token, cfg.permit_ttl],
        )
        if verdict != "allow":
            raise CircuitOpenError(self.name, max(0.0, float(retry_after)))
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            failed = self.is_failure(exc)
            self._finish(
                token, "failure" if failed else "success", f"{type(exc).__name__}: {exc}"[:500] if failed else ""
            )
            raise
        if record_on is None:
            self._finish(token, "success", "")
        else:  # EVAL, not the registered script: a pipeline holding one first asks SCRIPT EXISTS, a round trip
            record_on.eval(_RECORD, len(self.keys), *self.keys, *self._record_args(token, "success", ""))
        return result

    def _finish(self, token: str, outcome: str, error: str) -> str:
        return self._record(keys=self.keys, args=self._record_args(token, outcome, error))

    def _record_args(self, token: str, outcome: str, error: str) -> list[Any]:
        cfg = self.config
        return [repr(time.time()), outcome, token, cfg.failure_threshold, cfg.success_threshold, error]

    def reset(self) -> str:
        """Close the breaker by hand; returns the state it was in."""
        return self._reset(keys=self.keys, args=[repr(time.time())])

    def snapshot(self) -> dict[str, Any]:
        raw = self.r.hgetall(self.keys[0])
        state = raw.get("state", "closed")
        # An open breaker past its recovery time admits the next call: report what a caller gets.
        if state == "open" and time.time() - float(raw.get("opened_at") or 0) >= self.config.recovery_seconds:
            state = "half_open"
        return {
            "name": self.name,
            "state": state,
            "failure_count": int(raw.get("failure_count") or 0),
            "success_count": int(raw.get("success_count") or 0),
            "total_failures": int(raw.get("total_failures") or 0),
            "last_failure": iso_utc(raw.get("last_failure")),
            "last_error": raw.get("last_error") or None,
            "last_state_change": iso_utc(raw.get("last_state_change")),
            "last_call": iso_utc(raw.get("last_call")),
            "opened_at": iso_utc(raw.get("opened_at")) if state != "closed" else None,
        }


def breaker(name: str, settings: Settings, client: redis.Redis | None = None) -> CircuitBreaker:
    return CircuitBreaker(name, client or get_redis(settings), BreakerConfig.from_settings(settings))


def all_breakers(settings: Settings) -> list[dict[str, Any]]:
    return [breaker(name, settings).snapshot() for name in SERVICES]


def reset_breaker(name: str, settings: Settings) -> dict[str, Any]:
    """Reset one breaker by name; 400 for a malformed name, 404 for one that does not exist."""
    if not NAME.match(name):
        raise InvalidInput(f"Invalid circuit breaker name '{name[:80]}': lower-case letters, digits, '_' or '-'.")
    if name not in SERVICES:
        raise NotFound(f"Circuit breaker '{name}' not found; known: {', '.join(SERVICES)}.")
    previous = breaker(name, settings).reset()
    return {
        "name": name,
        "previous_state": previous,
        "new_state": "closed",
        "message": f"Circuit breaker {name} reset to closed state",
    }

"""Circuit breakers on real Redis: thresholds, half-open limits, recovery, shared across processes."""

import subprocess
import sys
import threading
import time
import uuid

import pytest

from app.core.redis_client import get_redis
from app.pipeline.ai.breakers import BreakerConfig, CircuitBreaker, CircuitOpenError, ServiceRejected


class Boom(RuntimeError):
    pass


def fail():
    raise Boom("service down")


def ok():
    return "ok"


@pytest.fixture
def make(settings):
    def build(**cfg):
        config = BreakerConfig(
            **{"failure_threshold": 5, "recovery_seconds": 0.5, "half_open_max_calls": 3, "success_threshold": 2, **cfg}
        )
        return CircuitBreaker(f"t{uuid.uuid4().hex[:10]}", get_redis(settings), config)

    return build


def test_opens_after_five_consecutive_failures_and_refuses_without_calling(make):
    b = make()
    calls = []
    for i in range(4):
        with pytest.raises(Boom):
            b.call(fail)
        assert b.snapshot()["state"] == "closed" and b.snapshot()["failure_count"] == i + 1
    with pytest.raises(Boom):
        b.call(fail)
    snap = b.snapshot()
    assert snap["state"] == "open" and snap["failure_count"] == 5 and "service down" in snap["last_error"]
    with pytest.raises(CircuitOpenError) as info:
        b.call(lambda: calls.append(1))
    assert calls == [] and 0 < info.value.retry_after <= 0.5


def test_a_success_resets_the_consecutive_count(make):
    b = make()
    for _ in range(4):
        with pytest.raises(Boom):
            b.call(fail)
    assert b.call(ok) == "ok"
    for _ in range(4):
        with pytest.raises(Boom):
            b.call(fail)
    assert b.snapshot()["state"] == "closed"


def test_client_errors_never_trip_it(make):
    b = make()

    def rejected():
        raise ServiceRejected("HTTP 422: not an image")

    for _ in range(20):
        with pytest.raises(ServiceRejected):
            b.call(rejected)
    snap = b.snapshot()
    assert snap["state"] == "closed" and snap["failure_count"] == 0 and snap["success_count"] == 20


def test_half_open_admits_three_trial_calls_and_two_successes_close_it(make):
    b = make()
    for _ in range(5):
        with pytest.raises(Boom):
            b.call(fail)
    time.sleep(0.6)
    gate = threading.Event()
    entered = []

    def slow():
        entered.append(1)
        gate.wait(5)
        return "ok"

    threads = [threading.Thread(target=b.call, args=(slow,)) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.time() + 5
    while len(entered) < 3 and time.time() < deadline:
        time.sleep(0.01)
    assert len(entered) == 3 and b.snapshot()["state"] == "half_open"
    with pytest.raises(CircuitOpenError):  # a fourth call while three trials are out
        b.call(ok)
    gate.set()
    for t in threads:
        t.join(5)
    assert b.snapshot()["state"] == "closed"


def test_half_open_failure_reopens(make):
    b = make()
    for _ in range(5):
        with pytest.raises(Boom):
            b.call(fail)
    time.sleep(0.6)
    assert b.call(ok) == "ok"  # first trial succeeds: still half-open (needs two)
    assert b.snapshot()["state"] == "half_open"
    with pytest.raises(Boom):
        b.call(fail)
    assert b.snapshot()["state"] == "open"
    with pytest.raises(CircuitOpenError):
        b.call(ok)


def test_state_is_shared_with_other_processes(make, settings):
    """A breaker another process opened refuses calls here: the state lives in Redis."""
    b = make(recovery_seconds=30)
    code = (
        "from app.pipeline.ai.breakers import BreakerConfig, CircuitBreaker\n"
        "from app.core.redis_client import get_redis\n"
        f"b = CircuitBreaker({b.name!r}, get_redis(), BreakerConfig(recovery_seconds=30))\n"
        "def fail():\n    raise OSError('down')\n"
        "for _ in range(5):\n"
        "    try:\n        b.call(fail)\n    except OSError:\n        pass\n"
        "print(b.snapshot()['state'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "open"
    with pytest.raises(CircuitOpenError):
        b.call(ok)


def test_reset(make):
    b = make(recovery_seconds=30)
    for _ in range(5):
        with pytest.raises(Boom):
            b.call(fail)
    assert b.reset() == "open"
    assert b.snapshot()["state"] == "closed" and b.call(ok) == "ok"


def test_breaker_endpoints(client, api_headers, settings, reset_ai_breakers):
    from app.pipeline.ai.breakers import breaker

    r = client.get("/api/system/circuit-breakers")
    assert r.status_code == 200
    names = {b["name"]: b for b in r.get_json()["circuit_breakers"]}
    assert set(names) == {"detector", "analyser"}
    assert {"state", "failure_count", "success_count", "last_failure", "last_state_change"} <= set(names["detector"])

    det = breaker("detector", settings)
    for _ in range(5):
        with pytest.raises(Boom):
            det.call(fail)
    r = client.get("/api/system/circuit-breakers")
    assert {b["name"]: b["state"] for b in r.get_json()["circuit_breakers"]}["detector"] == "open"

    assert client.post("/api/system/circuit-breakers/detector/reset").status_code == 401
    r = client.post("/api/system/circuit-breakers/detector/reset", headers=api_headers)
    assert r.status_code == 200
    body = r.get_json()
    assert body["previous_state"] == "open" and body["new_state"] == "closed" and body["name"] == "detector"
    r = client.post("/api/system/circuit-breakers/nope/reset", headers=api_headers)
    assert r.status_code == 404 and "detail" in r.get_json()
    r = client.post("/api/system/circuit-breakers/Bad!Name/reset", headers=api_headers)
    assert r.status_code == 400 and "detail" in r.get_json()

"""Infrastructure health and alerts from real signals: request timings, Redis, SQL, queues."""

import time

from app.celery.app import celery
from app.ops import infrastructure
from app.ops.infrastructure import OPEN_KEY

P = "/api/v1/platform/system/infrastructure"


def _flush(app):
    app.extensions["vigil_sampler"].flush()


def test_health_reports_every_service_from_real_figures(app, client, redis_client):
    from app.observability.api_timings import SAMPLES_KEY

    redis_client.delete(SAMPLES_KEY)  # earlier tests' deliberate 500s are in the window
    for _ in range(20):
        client.get("/health")
    client.get("/api/v1/platform/system/nothing")  # a 404 is not a server error
    _flush(app)
    r = client.get(f"{P}/health")
    assert r.status_code == 200
    services = {s["name"]: s for s in r.get_json()["data"]["services"]}
    assert set(services) == {"API Server", "OLTP Database", "Redis", "SMTP Service", "Workers"}
    api = services["API Server"]
    assert api["requests_sampled"] >= 21 and api["error_rate_percent"] == 0.0
    assert 0 < api["response_time_ms"]["avg"] <= api["response_time_ms"]["p99"]
    db = services["OLTP Database"]
    assert db["status"] in ("healthy", "degraded") and db["query_latency_ms"] > 0 and db["backend"] == "sqlite"
    assert services["Redis"]["status"] == "healthy" and services["Redis"]["latency_ms"] >= 0
    assert "queue_backlog" in services["SMTP Service"]
    for s in services.values():
        assert s["status"] in ("healthy", "degraded", "down")


def test_server_errors_raise_the_error_rate(app, client, settings, redis_client):
    from flask import Blueprint

    from app.observability.api_timings import SAMPLES_KEY

    redis_client.delete(SAMPLES_KEY)  # only this test's requests in the window
    from app import create_app

    flaky = create_app(settings)
    bp = Blueprint("flaky", __name__)

    @bp.get("/api/system/flaky")
    def boom():
        raise RuntimeError("boom")

    flaky.register_blueprint(bp)
    c = flaky.test_client()
    for _ in range(10):
        assert c.get("/api/system/flaky").status_code == 500
    flaky.extensions["vigil_sampler"].flush()
    api = {s["name"]: s for s in infrastructure.health(settings)}["API Server"]
    assert api["error_rate_percent"] > 5 and api["status"] == "down"


def test_alerts_raise_once_and_resolve(client, api_headers, settings, redis_client):
    for key in redis_client.scan_iter(OPEN_KEY + "*"):
        redis_client.delete(key)
    # No consumer for notifications in the test session: a backlog makes the e-mail channel "down".
    for _ in range(3):
        celery.send_task("vigil.notification.send", kwargs={"channel": "email", "message": "x"}, queue="notification")
    first = infrastructure.evaluate(settings)
    second = infrastructure.evaluate(settings)
    assert first["raised"] >= 1 and second["raised"] == 0  # the same condition does not repeat
    alerts = client.get(f"{P}/alerts?hours=1").get_json()["data"]["alerts"]
    smtp = [a for a in alerts if a["service"] == "SMTP Service" and not a["resolved"]]
    assert len(smtp) == 1 and smtp[0]["severity"] == "error" and "no worker" in smtp[0]["message"]
    errors_only = client.get(f"{P}/alerts?hours=1&severity=error").get_json()["data"]["alerts"]
    assert all(a["severity"] == "error" for a in errors_only)
    r = client.post(f"{P}/alerts/{smtp[0]['id']}/acknowledge", headers=api_headers)
    assert r.status_code == 200 and r.get_json()["data"]["acknowledged"] is True
    client.delete("/api/v1/platform/system/queues/notification/jobs?status=waiting", headers=api_headers)
    infrastructure.evaluate(settings)
    again = {a["id"]: a for a in client.get(f"{P}/alerts?hours=1").get_json()["data"]["alerts"]}
    assert again[smtp[0]["id"]]["resolved"] is True and again[smtp[0]["id"]]["acknowledged"] is True


def test_alert_queries_validate(client, api_headers):
    for q in ("hours=0", "hours=169", "severity=fatal", "hours=x"):
        r = client.get(f"{P}/alerts?{q}")
        assert r.status_code == 400 and r.get_json()["success"] is False
    assert client.post(f"{P}/alerts/alert_000000000000/acknowledge", headers=api_headers).status_code == 404
    assert client.post(f"{P}/alerts/nope/acknowledge", headers=api_headers).status_code == 400
    assert client.post(f"{P}/alerts/alert_000000000000/acknowledge").status_code == 401


def test_health_says_down_when_redis_is(settings):
    from app.core.settings import replace
    from tests.servers import free_port

    dead = replace(
        settings, redis_url=f"redis://127.0.0.1:{free_port()}/0", broker_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    t0 = time.perf_counter()
    services = {s["name"]: s for s in infrastructure.health(dead)}
    assert time.perf_counter() - t0 < 5
    assert services["Redis"]["status"] == "down" and services["OLTP Database"]["status"] in ("healthy", "degraded")

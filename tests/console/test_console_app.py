"""The console's sessions and its place in the app, through Flask's test client on a real Redis database and a fresh
SQLite database: where sign-in may send you, when a session ends, what an operator's JWT may do and how it is
audited, and that the console adds nothing to the API's own routes and document."""

from __future__ import annotations

import re
import time

import pytest
from sqlalchemy import select

from tests.helpers import API_KEY, make_jwt

PAGES = (
    "/console/queues",
    "/console/jobs",
    "/console/pipeline",
    "/console/alerts",
    "/console/workers",
    "/console/system",
)


@pytest.fixture
def console_settings(redis_db, settings, tmp_path):
    from app.core.migrate import upgrade

    url = f"sqlite:///{tmp_path}/console.db"
    upgrade(url)
    return redis_db.settings(settings, database_url=url, var_dir=tmp_path / "var", camera_root=tmp_path / "cameras")


@pytest.fixture
def console_app(console_settings):
    from app import create_app

    flask_app = create_app(console_settings)
    flask_app.testing = True
    return flask_app


def _token(page: bytes) -> str:
    return re.search(rb'name="csrf_token" value="([^"]+)"', page).group(1).decode()


def sign_in(client, credential: str = API_KEY, kind: str = "api_key", next_path: str | None = None):
    token = _token(client.get("/console/login").data)
    data = {"kind": kind, "credential": credential, "csrf_token": token}
    if next_path is not None:
        data["next"] = next_path
    return client.post("/console/login", data=data)


def test_the_console_adds_no_route_to_the_api(console_app):
    assert not [r.rule for r in console_app.url_map.iter_rules() if r.rule.startswith("/console")]
    document = console_app.test_client().get("/api/openapi.json").get_json()
    assert not [path for path in document["paths"] if path.startswith("/console")]
    r = console_app.test_client().get("/consoles")  # not the console: the API's JSON 404
    assert r.status_code == 404 and r.is_json


@pytest.mark.parametrize(
    "target,landing",
    [
        ("/jobs?queue=analysis", "/console/jobs?queue=analysis"),
        ("//elsewhere.invalid/steal", "/console/queues"),
        ("https://elsewhere.invalid/", "/console/queues"),
        ("/\\elsewhere.invalid", "/console/queues"),
    ],
)
def test_signing_in_never_leaves_the_console(console_app, target, landing):
    r = sign_in(console_app.test_client(), next_path=target)
    assert r.status_code == 303 and r.headers["Location"] == landing


def test_every_page_answers_on_a_fresh_install(console_app):
    client = console_app.test_client()
    sign_in(client)
    for page in PAGES:
        r = client.get(page)
        assert r.status_code == 200, (page, r.data[-2000:])
        assert "script-src 'self'" in r.headers["Content-Security-Policy"] and r.headers["Cache-Control"] == "no-store"
    assert b"The worker supervisor is not running" in client.get("/console/workers").data
    assert b"No events yet" in client.get("/console/pipeline").data
    r = client.get("/console/jobs/no-such-job")
    assert r.status_code == 404 and b"No job with id" in r.data
    assert client.get("/console/nowhere").status_code == 404


def test_a_jwt_session_ends_when_its_token_does(console_app):
    client = console_app.test_client()
    assert sign_in(client, make_jwt(["ops"], expires_in=2), kind="jwt").status_code == 303
    assert client.get("/console/queues").status_code == 200
    time.sleep(2.2)
    r = client.get("/console/queues")
    assert r.status_code == 303 and r.headers["Location"].startswith("/console/login")


def test_a_new_api_key_ends_the_sessions_signed_with_the_old_one(console_app, console_settings):
    from app import create_app
    from app.core.settings import replace

    client = console_app.test_client()
    sign_in(client)
    cookie = client.get_cookie("vigil_console", path="/console")
    assert cookie is not None and client.get("/console/queues").status_code == 200
    rotated = create_app(replace(console_settings, api_key="a-brand-new-key-0123456789")).test_client()
    rotated.set_cookie(cookie.key, cookie.value, path="/console")
    r = rotated.get("/console/queues")
    assert r.status_code == 303 and r.headers["Location"].startswith("/console/login")


def test_an_operator_jwt_acts_and_is_audited_as_its_subject(console_app, console_settings):
    from app.core.db import session_scope
    from app.jobs import queues
    from app.models import AuditLog

    client = console_app.test_client()
    sign_in(client, make_jwt(["ops"], sub="alice"), kind="jwt")
    token = _token(client.get("/console/queues").data)
    assert b"read-only" not in client.get("/console/queues").data
    assert client.post("/console/queues/cleanup/pause", data={"csrf_token": token}).status_code == 303
    assert next(q for q in queues.overview(console_settings) if q["name"] == "cleanup")["paused"]
    assert client.post("/console/queues/cleanup/resume", data={"csrf_token": token}).status_code == 303
    assert client.post("/console/queues/nowhere/pause", data={"csrf_token": token}).status_code == 303
    assert b"Unknown queue" in client.get("/console/queues").data  # flashed on the page it came back to
    with session_scope(console_settings) as session:
        rows = session.execute(select(AuditLog.action, AuditLog.actor).where(AuditLog.resource_type == "queue")).all()
    assert ("queue_paused", "jwt:alice") in rows and ("queue_resumed", "jwt:alice") in rows


def test_a_token_without_an_operator_role_reads_but_cannot_act(console_app, console_settings):
    from app.jobs import queues

    client = console_app.test_client()
    sign_in(client, make_jwt(["ai_admin"], sub="bob"), kind="jwt")  # an AI Monitoring API role: no say over queues
    page = client.get("/console/queues").data
    assert b"read-only" in page and b'title="Pause' not in page
    r = client.post("/console/queues/cleanup/pause", data={"csrf_token": _token(page)})
    assert r.status_code == 403 and b"Read-only session" in r.data
    assert not next(q for q in queues.overview(console_settings) if q["name"] == "cleanup")["paused"]


def test_over_https_the_session_cookie_is_secure(console_app):
    client = console_app.test_client()
    plain = client.get("/console/login").headers["Set-Cookie"]
    secure = console_app.test_client().get("/console/login", base_url="https://localhost").headers["Set-Cookie"]
    assert "Secure" not in plain and "Secure" in secure and "HttpOnly" in secure and "SameSite=Strict" in secure

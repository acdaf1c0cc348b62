"""Every mutating route needs credentials; roles decide what a valid token may do."""

import re

import pytest
from flask import Blueprint

from app import create_app
from app.api.kit.auth import MUTATING
from app.api.kit.endpoint import endpoint
from tests.helpers import API_KEY, make_jwt


def _fill(rule: str) -> str:
    """A path the rule matches: `1` for integer parameters, `x1` for the others."""
    return re.sub(r"<(?:([^:<>]+):)?([^<>]+)>", lambda m: "1" if m.group(1) == "int" else "x1", rule)


def _extra_routes():
    bp = Blueprint("authprobe", __name__)

    @bp.post("/api/v1/platform/system/authprobe")
    @endpoint()
    def platform_action():
        return {"ok": True}

    @bp.post("/api/v1/monitoring/authprobe")
    @endpoint()
    def monitoring_action():
        return {"ok": True}

    @bp.get("/api/system/authprobe")
    @endpoint()
    def read_action():
        return {"ok": True}

    return bp


@pytest.fixture
def auth_app(settings):
    flask_app = create_app(settings)
    flask_app.register_blueprint(_extra_routes())
    return flask_app


def test_every_mutating_route_answers_401_without_credentials(app):
    client = app.test_client()
    checked = 0
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) & MUTATING):
            r = client.open(_fill(rule.rule), method=method, json={})
            assert r.status_code == 401, f"{method} {rule.rule} answered {r.status_code}"
            assert r.headers.get("WWW-Authenticate")
            checked += 1
    # Guard against a vacuous pass once the app has mutating routes (later issues add them).
    assert checked == sum(len((r.methods or set()) & MUTATING) for r in app.url_map.iter_rules())


def test_walk_includes_added_routes(auth_app):
    test_every_mutating_route_answers_401_without_credentials(auth_app)


def test_api_key(auth_app):
    c = auth_app.test_client()
    assert c.post("/api/v1/platform/system/authprobe", headers={"X-API-Key": API_KEY}).status_code == 200
    r = c.post("/api/v1/platform/system/authprobe", headers={"X-API-Key": "wrong"})
    assert r.status_code == 401 and r.get_json()["success"] is False


@pytest.mark.parametrize(
    "roles,platform,monitoring",
    [
        (["ops"], 200, 403),
        (["admin"], 200, 200),
        (["ai_admin"], 403, 200),
        (["platform_admin"], 200, 200),
        (["viewer"], 403, 403),
        ([], 403, 403),
    ],
)
def test_jwt_roles(auth_app, roles, platform, monitoring):
    c = auth_app.test_client()
    h = {"Authorization": f"Bearer {make_jwt(roles)}"}
    assert c.post("/api/v1/platform/system/authprobe", headers=h).status_code == platform
    r = c.post("/api/v1/monitoring/authprobe", headers=h)
    assert r.status_code == monitoring
    if monitoring == 403:
        assert r.get_json()["code"] == "insufficient_permissions"  # the AI Monitoring API's code for its family


@pytest.mark.parametrize(
    "token",
    [
        make_jwt(["ops"], expires_in=-10),
        make_jwt(["ops"], secret="another-secret-that-is-long-enough-123456"),
        "not.a.jwt",
    ],
)
def test_bad_tokens_are_401(auth_app, token):
    r = auth_app.test_client().post("/api/v1/platform/system/authprobe", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401


def test_reads_open_unless_configured(settings):
    open_app = create_app(settings)
    open_app.register_blueprint(_extra_routes())
    assert open_app.test_client().get("/api/system/authprobe").status_code == 200

    from app.core.settings import replace

    closed = create_app(replace(settings, auth_reads=True))
    closed.register_blueprint(_extra_routes())
    c = closed.test_client()
    assert c.get("/api/system/authprobe").status_code == 401
    assert (
        c.get("/api/system/authprobe", headers={"Authorization": f"Bearer {make_jwt(['viewer'])}"}).status_code == 200
    )
    assert c.get("/health").status_code == 200  # probes stay open

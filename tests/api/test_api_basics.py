"""Envelopes, validation and request ids, through routes declared the way real ones are."""

import logging
from typing import Literal

import pytest
from flask import Blueprint
from pydantic import BaseModel, Field

from app import create_app
from app.api.kit.endpoint import endpoint


class Q(BaseModel):
    status: Literal["active", "waiting"] | None = None
    limit: int = Field(50, ge=1, le=100)
    tags: list[str] = []


class B(BaseModel):
    name: str = Field(min_length=1)
    count: int = Field(ge=0)


def _blueprint():
    bp = Blueprint("probe", __name__)

    for prefix, name in (
        ("/api/v1/platform/system", "platform"),
        ("/api/system", "system"),
        ("/api/v1/monitoring", "monitoring"),
    ):

        @bp.get(f"{prefix}/probe", endpoint=f"{name}_get")
        @endpoint(query=Q)
        def get_probe(query: Q):
            return {"status": query.status, "limit": query.limit, "tags": query.tags}

        @bp.post(f"{prefix}/probe", endpoint=f"{name}_post")
        @endpoint(body=B, status=201)
        def post_probe(body: B):
            return body.model_dump()

        @bp.get(f"{prefix}/boom", endpoint=f"{name}_boom")
        @endpoint()
        def boom():
            raise RuntimeError("secret internals")

    return bp


@pytest.fixture
def probe_client(settings):
    flask_app = create_app(settings)
    flask_app.register_blueprint(_blueprint())
    return flask_app.test_client()


def test_query_validation_names_the_field(probe_client):
    r = probe_client.get("/api/v1/platform/system/probe?status=bogus&limit=500")
    assert r.status_code == 400
    body = r.get_json()
    assert body["success"] is False and body["error"]["code"] == "validation_error"
    fields = {d["field"] for d in body["error"]["details"]}
    assert fields == {"status", "limit"}
    assert "limit" in body["error"]["message"]


def test_query_parsing_and_lists(probe_client):
    r = probe_client.get("/api/system/probe?status=active&limit=7&tags=a&tags=b")
    assert r.status_code == 200
    assert r.get_json() == {"status": "active", "limit": 7, "tags": ["a", "b"]}


@pytest.mark.parametrize(
    "prefix,status", [("/api/system", 422), ("/api/v1/platform/system", 400), ("/api/v1/monitoring", 422)]
)
def test_body_validation_status_per_family(probe_client, api_headers, prefix, status):
    r = probe_client.post(f"{prefix}/probe", json={"name": "", "count": -1}, headers=api_headers)
    assert r.status_code == status
    body = r.get_json()
    if prefix == "/api/system":
        assert "name" in body["detail"] and {e["field"] for e in body["errors"]} == {"name", "count"}
    elif prefix == "/api/v1/monitoring":
        assert body["code"] == "validation_error"
    else:
        assert body["error"]["code"] == "validation_error"


@pytest.mark.parametrize("payload", [b"{not json", b"[1, 2]", b'"text"'])
def test_malformed_bodies_are_4xx(probe_client, api_headers, payload):
    r = probe_client.post(
        "/api/system/probe", data=payload, headers={**api_headers, "Content-Type": "application/json"}
    )
    assert 400 <= r.status_code < 500
    assert "detail" in r.get_json()


def test_valid_body_gets_declared_status(probe_client, api_headers):
    r = probe_client.post("/api/system/probe", json={"name": "x", "count": 2}, headers=api_headers)
    assert r.status_code == 201 and r.get_json() == {"name": "x", "count": 2}


@pytest.mark.parametrize(
    "path,check",
    [
        ("/api/v1/platform/system/boom", lambda b: b["success"] is False and b["error"]["code"] == "internal_error"),
        ("/api/system/boom", lambda b: "detail" in b),
        ("/api/v1/monitoring/boom", lambda b: b["code"] == "internal_error"),
    ],
)
def test_unexpected_errors_are_500_without_internals(probe_client, path, check, caplog):
    with caplog.at_level(logging.ERROR):
        r = probe_client.get(path)
    assert r.status_code == 500
    body = r.get_json()
    assert check(body)
    assert "secret internals" not in r.get_data(as_text=True)
    assert "Traceback" not in r.get_data(as_text=True)
    assert "secret internals" in caplog.text  # but the log has it, with the request id


def test_unknown_route_and_method_use_envelopes(client):
    r = client.get("/api/v1/platform/system/nothing-here")
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"
    r = client.delete("/health")
    assert r.status_code == 405 and "detail" in r.get_json() and "GET" in r.headers["Allow"]


def test_no_route_with_a_variable_also_takes_a_fixed_path(app):
    """`/jobs/<job_id>` once matched `/jobs/batch`: OPTIONS there advertised GET and DELETE, and GET looked up a job
    called "batch". Each fixed path must answer only with its own methods (`other_than(...)` keeps them apart)."""
    adapter = app.url_map.bind("localhost")
    own: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if not rule.arguments:
            own.setdefault(rule.rule, set()).update(rule.methods or ())
    assert "/api/v1/platform/system/jobs/batch" in own
    taken = {path: sorted(set(adapter.allowed_methods(path)) - methods) for path, methods in own.items()}
    assert {path: extra for path, extra in taken.items() if extra} == {}


def test_request_id_is_echoed_or_generated(client):
    r = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert r.headers["X-Request-ID"] == "abc-123"
    r = client.get("/health", headers={"X-Request-ID": "bad id with spaces;<script>"})
    assert r.headers["X-Request-ID"].startswith("req_")
    r = client.get("/nowhere")
    assert r.get_json()["request_id"] == r.headers["X-Request-ID"]

import re

import pytest
from openapi_spec_validator import validate

from app.api.kit.auth import MUTATING


def test_document_is_valid_openapi_31_and_covers_every_route(app, client):
    r = client.get("/api/openapi.json")
    assert r.status_code == 200
    doc = r.get_json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        path = __import__("re").sub(r"\{[^:}]+:", "{", path)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            op = doc["paths"][path][method.lower()]
            if method in MUTATING:
                assert op["security"] and "401" in op["responses"]


def test_health_probes_documented(client):
    doc = client.get("/api/openapi.json").get_json()
    for path in ("/health", "/ready", "/api/system/health", "/api/system/health/ready", "/api/system/health/live"):
        assert "get" in doc["paths"][path]


def test_declared_routes_document_every_answer(app, client):
    """Every route declares its answers (the fuzzer and the generated client rely on it), and every
    success and error answer has a schema."""
    from app.api.kit.meta import meta_of

    doc = client.get("/api/openapi.json").get_json()
    checked = 0
    for rule in app.url_map.iter_rules():
        meta = meta_of(app.view_functions.get(rule.endpoint))
        blueprint = rule.endpoint.split(".")[0]
        if blueprint != "static" and rule.rule != "/ws/events":  # /ws/events: a WebSocket upgrade (docs/api.md)
            assert meta is not None and meta.checked, f"{rule.rule} declares no answer"
        if meta is None or not meta.checked:
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            responses = doc["paths"][path][method.lower()]["responses"]
            assert any(s.startswith("2") for s in responses)
            for status, answer in responses.items():
                if status in ("206", "304"):
                    continue
                assert answer.get("content"), f"{method} {path} {status} has no schema"
            checked += 1
    assert checked >= 50


def _drifting_app(settings):
    from flask import Blueprint
    from pydantic import BaseModel

    from app import create_app
    from app.api.kit.endpoint import endpoint

    class Shape(BaseModel):
        model_config = {"extra": "forbid"}
        name: str

    bp = Blueprint("drift", __name__)

    @bp.get("/api/system/drift/<kind>")
    @endpoint(response=Shape)
    def drift(kind: str):
        return {
            "ok": {"name": "x"},
            "extra": {"name": "x", "more": 1},
            "type": {"name": 1},
            "status": ({"name": "x"}, 201),
        }[kind]

    @bp.get("/api/v1/platform/system/drift")
    @endpoint(response=Shape)
    def platform_drift():
        return {"name": "x"}  # not in the platform envelope

    flask_app = create_app(settings)
    flask_app.register_blueprint(bp)
    return flask_app.test_client()


@pytest.mark.parametrize("kind,status", [("ok", 200), ("extra", 500), ("type", 500), ("status", 500)])
def test_an_answer_that_drifts_from_its_declaration_is_a_500(settings, kind, status):
    c = _drifting_app(settings)
    r = c.get(f"/api/system/drift/{kind}")
    assert r.status_code == status, r.get_json()
    if status == 500:
        assert "request id" in r.get_json()["detail"]


def test_the_platform_envelope_is_part_of_the_declaration(settings):
    assert _drifting_app(settings).get("/api/v1/platform/system/drift").status_code == 500


def test_component_names_are_unique(client):
    """Two models of one name in different modules get module-qualified names from pydantic
    (`app__api__alerts__RuleOut`), which generated clients turn into unusable types: name them apart."""
    names = client.get("/api/openapi.json").get_json()["components"]["schemas"]
    assert not [name for name in names if "__" in name]

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

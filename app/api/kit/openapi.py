"""The OpenAPI 3.1 document, generated from the code at request time (cached per app).

Paths and methods come from Flask's URL map; parameters, bodies, answers and links from what each
route declares with `@endpoint`; schemas from pydantic's own JSON Schema generator, which emits JSON
Schema 2020-12, the dialect OpenAPI 3.1 uses. Nothing is written by hand: the success and error
bodies are the very models the responses are checked against (`endpoint.check_response`,
`errors.render_error`), so the document cannot drift from the routes. Why not flask-openapi3 or
spectree: see docs/api.md.

Statuses every route of a kind can answer are added here, once: 400 (and 422 outside the platform
family) for invalid input, 413 and 415 for bodies, 414 for a query string that makes the URL too
long, 401/403 for credentials, 503 when Redis or the database is unavailable. Every input string
refuses NUL characters (the request parser does), and the schemas say so.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from flask import Flask
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from app.api.kit.auth import MUTATING
from app.api.kit.endpoint import MAX_BODY_BYTES
from app.api.kit.envelopes import FAMILY_ERROR, family_of, success_model
from app.api.kit.meta import EndpointMeta, ErrorDoc, meta_of

_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
REF = "#/components/schemas/{model}"
NO_NUL = "^[^\\x00]*$"
MAX_REQUEST_LINE = 8190  # gunicorn.conf.py's limit_request_line

_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    206: "Partial content (Range)",
    304: "Not modified (conditional request)",
    400: "Bad request",
    401: "Missing or invalid credentials",
    403: "Role not granted",
    404: "Not found",
    409: "Conflict",
    413: f"Request body larger than {MAX_BODY_BYTES} bytes",
    415: "Request body is not JSON (send Content-Type: application/json)",
    414: f"URL longer than {MAX_REQUEST_LINE} bytes (answered by the server before the API sees it)",
    422: "Validation error",
    503: "Redis or the database is unavailable",
}


def operation_id(endpoint: str, method: str) -> str:
    return f"{endpoint}_{method.lower()}".replace(".", "_")


def _forbid_nul(schema: Any) -> Any:
    """`schema` with every free string refusing NUL characters (strings with an enum, a constant, a
    format or a pattern of their own already exclude them)."""
    if isinstance(schema, list):
        return [_forbid_nul(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (_forbid_nul(v) if k not in ("const", "enum", "default", "examples") else v) for k, v in schema.items()}
    types = out.get("type")
    is_string = types == "string" or (isinstance(types, list) and "string" in types)
    if is_string and not any(k in out for k in ("pattern", "format", "enum", "const")):
        out["pattern"] = NO_NUL
    return out


def _answers(meta: EndpointMeta) -> list[type[BaseModel]]:
    return [m for m in meta.success_statuses().values() if m is not None]


def _models(app: Flask) -> list[tuple[type[BaseModel], str]]:
    seen: dict[tuple[type[BaseModel], str], None] = {}
    for model in FAMILY_ERROR.values():
        seen[(model, "validation")] = None
    for rule in app.url_map.iter_rules():
        meta = meta_of(app.view_functions.get(rule.endpoint))
        if meta is None:
            continue
        family = family_of(rule.rule)
        models = [success_model(m, family) for m in _answers(meta)]
        models += [doc.model for doc in meta.errors.values() if doc.model is not None]
        if meta.body is not None:
            models.append(meta.body)
        for model in models:
            seen[(model, "validation")] = None
    return list(seen)


def _body_required(model: type[BaseModel]) -> bool:
    """Whether a body must be sent: an empty body reads as `{}`, so only if `{}` is refused."""
    try:
        model.model_validate({})
    except ValidationError:
        return True
    return False


def _bodies(app: Flask) -> list[type[BaseModel]]:
    metas = [meta_of(view) for view in app.view_functions.values()]
    return list({meta.body: None for meta in metas if meta is not None and meta.body is not None})


def _reachable(roots: list[dict[str, Any]], schemas: dict[str, Any]) -> set[str]:
    """Names of the component schemas `roots` refer to, directly or through each other."""
    seen: set[str] = set()
    stack: list[Any] = list(roots)
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[-1]
                if name not in seen and name in schemas:
                    seen.add(name)
                    stack.append(schemas[name])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return seen


def _inline(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    """A query or path model's schema, its nested definitions moved to the components."""
    schema = model.model_json_schema(ref_template=REF)
    for name, definition in schema.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    return schema


def _parameters(meta: EndpointMeta | None, path_args: list[str], schemas: dict[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    path_props: dict[str, Any] = {}
    if meta and meta.path is not None:
        path_props = _inline(meta.path, schemas).get("properties", {})
    for name in path_args:
        prop = path_props.get(name, {"type": "string"})
        param = {"name": name, "in": "path", "required": True, "schema": _forbid_nul(prop)}
        if "description" in prop:
            param["description"] = prop["description"]
        params.append(param)
    if meta and meta.query is not None:
        schema = _inline(meta.query, schemas)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            param = {"name": name, "in": "query", "required": name in required, "schema": _forbid_nul(prop)}
            if "description" in prop:
                param["description"] = prop["description"]
            params.append(param)
    return params


def _errors(meta: EndpointMeta | None, family: str, method: str, auth_reads: bool) -> dict[int, ErrorDoc]:
    errors = dict(meta.errors) if meta else {}
    if meta is None:
        return errors
    if meta.query:
        errors.setdefault(414, ErrorDoc(_STATUS_TEXT[414]))
    if meta.query or meta.path or meta.body:
        errors.setdefault(
            400, ErrorDoc("Invalid parameters" if not meta.body else "Invalid parameters or body (not JSON, not UTF-8)")
        )
    if meta.body:
        if family != "platform":
            errors.setdefault(422, ErrorDoc("Invalid body"))
        errors.setdefault(413, ErrorDoc(_STATUS_TEXT[413]))
        errors.setdefault(415, ErrorDoc(_STATUS_TEXT[415]))
    if not meta.probe:
        if method in MUTATING:
            errors.setdefault(401, ErrorDoc(_STATUS_TEXT[401]))
            errors.setdefault(403, ErrorDoc(_STATUS_TEXT[403]))
        elif auth_reads:
            errors.setdefault(401, ErrorDoc(_STATUS_TEXT[401]))
        if not meta.offline:
            errors.setdefault(503, ErrorDoc(_STATUS_TEXT[503]))
    return errors


def _links(app: Flask, meta: EndpointMeta) -> dict[str, Any]:
    out = {}
    for name, link in meta.links.items():
        methods = {m for rule in app.url_map.iter_rules(link.endpoint) for m in (rule.methods or ())} - {
            "HEAD",
            "OPTIONS",
        }
        if len(methods) != 1:
            raise ValueError(f"link {name}: endpoint {link.endpoint} must have exactly one method, has {methods}")
        entry: dict[str, Any] = {
            "operationId": operation_id(link.endpoint, methods.pop()),
            "parameters": dict(link.parameters),
        }
        if link.description:
            entry["description"] = link.description
        out[name] = entry
    return out


def _operation(
    app: Flask,
    rule: Any,
    method: str,
    meta: EndpointMeta | None,
    refs: dict[Any, Any],
    schemas: dict[str, Any],
    auth_reads: bool,
) -> dict[str, Any]:
    family = family_of(rule.rule)
    op: dict[str, Any] = {
        "operationId": operation_id(rule.endpoint, method),
        "summary": meta.summary if meta else rule.endpoint,
        "tags": (meta.tags if meta and meta.tags else [rule.endpoint.split(".")[0]]),
        "parameters": _parameters(meta, _CONVERTER.findall(rule.rule), schemas),
        "responses": {},
    }
    if meta and meta.description:
        op["description"] = meta.description
    successes = meta.success_statuses() if meta else {200: None}
    links = _links(app, meta) if meta else {}
    for status, model in sorted(successes.items()):
        answer: dict[str, Any] = {"description": _STATUS_TEXT.get(status, "OK")}
        if model is not None:
            answer["content"] = {"application/json": {"schema": refs[(success_model(model, family), "validation")]}}
        elif meta and meta.content and status == meta.status:
            answer["content"] = {media: {"schema": schema} for media, schema in meta.content.items()}
        if links:
            answer["links"] = links
        op["responses"][str(status)] = answer
    if meta and meta.body is not None:
        body_ref = refs[(meta.body, "validation")]
        op["requestBody"] = {
            "required": _body_required(meta.body),
            "content": {"application/json": {"schema": body_ref}},
        }
    errors = _errors(meta, family, method, auth_reads)
    if meta and not meta.probe and (method in MUTATING or auth_reads):
        op["security"] = [{"ApiKey": []}, {"BearerAuth": []}]
    for status, doc in sorted(errors.items()):
        model = doc.model or FAMILY_ERROR[family]
        op["responses"].setdefault(
            str(status),
            {"description": doc.description, "content": {"application/json": {"schema": refs[(model, "validation")]}}},
        )
    return op


def build_document(app: Flask) -> dict[str, Any]:
    settings = app.config["VIGIL_SETTINGS"]
    models = _models(app)
    refs, defs = models_json_schema(models, ref_template=REF)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    # Bodies refuse NUL characters in every string (the parser does); answers are left as they are.
    for name in _reachable([refs[(m, "validation")] for m in _bodies(app)], schemas):
        schemas[name] = _forbid_nul(copy.deepcopy(schemas[name]))
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        meta = meta_of(app.view_functions[rule.endpoint])
        path = _CONVERTER.sub(r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(
                app, rule, method, meta, refs, schemas, settings.auth_reads
            )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Vigil API",
            "version": app.config.get("VIGIL_VERSION", "0.1.0"),
            "description": "Task-queue backbone and operations API for AI camera pipelines. "
            "Errors use the envelope of each path family (see docs/api.md).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "BearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    }

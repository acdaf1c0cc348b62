"""The OpenAPI 3.1 document, generated from the code at request time (cached per app).

Paths and methods come from Flask's URL map; parameters, bodies and responses from the pydantic
models each route declares with `@endpoint`; schemas from pydantic's own JSON Schema generator,
which emits JSON Schema 2020-12, the dialect OpenAPI 3.1 uses. Nothing is written by hand, so the
document cannot drift from the routes. Why not flask-openapi3 or spectree: see docs/api.md.
"""
from __future__ import annotations

import re
from typing import Any

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.api.kit.auth import MUTATING
from app.api.kit.endpoint import EndpointMeta, meta_of
from app.api.kit.errors import family_of

_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
REF = "#/components/schemas/{model}"

_ERROR_SCHEMAS = {
    "PlatformError": {
        "type": "object", "required": ["success", "error"],
        "properties": {"success": {"type": "boolean", "const": False},
                       "error": {"type": "object", "required": ["code", "message"],
                                 "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                                                "details": {"type": "array", "items": {"type": "object"}},
                                                "request_id": {"type": "string"}}}},
    },
    "MonitoringError": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                       "errors": {"type": "array", "items": {"type": "object"}},
                       "request_id": {"type": "string"}},
    },
    "SystemError": {
        "type": "object", "required": ["detail"],
        "properties": {"detail": {"type": "string"}, "errors": {"type": "array", "items": {"type": "object"}},
                       "request_id": {"type": "string"}},
    },
}
_FAMILY_ERROR = {"platform": "PlatformError", "monitoring": "MonitoringError", "system": "SystemError"}
_STATUS_TEXT = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad request",
                401: "Missing or invalid credentials", 403: "Role not granted", 404: "Not found",
                409: "Conflict", 422: "Validation error", 503: "Service unavailable"}


def _models(app: Flask) -> list[tuple[type[BaseModel], str]]:
    seen: dict[tuple[type[BaseModel], str], None] = {}
    for view in app.view_functions.values():
        meta = meta_of(view)
        if meta is None:
            continue
        for model, mode in ((meta.query, "validation"), (meta.body, "validation"), (meta.path, "validation"),
                            (meta.response, "serialization")):
            if model is not None:
                seen[(model, mode)] = None
    return list(seen)


def _parameters(meta: EndpointMeta | None, path_args: list[str], schemas: dict[str, Any],
                refs: dict[tuple[type[BaseModel], str], Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    path_props: dict[str, Any] = {}
    if meta and meta.path is not None:
        path_props = meta.path.model_json_schema(ref_template=REF).get("properties", {})
    for name in path_args:
        params.append({"name": name, "in": "path", "required": True,
                       "schema": path_props.get(name, {"type": "string"})})
    if meta and meta.query is not None:
        schema = meta.query.model_json_schema(ref_template=REF)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            param = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if "description" in prop:
                param["description"] = prop["description"]
            params.append(param)
    return params


def build_document(app: Flask) -> dict[str, Any]:
    settings = app.config["VIGIL_SETTINGS"]
    models = _models(app)
    refs, defs = models_json_schema(models, ref_template=REF) if models else ({}, {})
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    schemas.update(_ERROR_SCHEMAS)
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        meta = meta_of(view)
        path = _CONVERTER.sub(r"{\1}", rule.rule)
        family = family_of(rule.rule)
        path_args = _CONVERTER.findall(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op: dict[str, Any] = {
                "operationId": f"{rule.endpoint}_{method.lower()}".replace(".", "_"),
                "summary": meta.summary if meta else rule.endpoint,
                "tags": (meta.tags if meta and meta.tags else [rule.endpoint.split(".")[0]]),
                "parameters": _parameters(meta, path_args, schemas, refs),
                "responses": {},
            }
            if meta and meta.description:
                op["description"] = meta.description
            ok = meta.status if meta else 200
            if meta and meta.response is not None:
                op["responses"][str(ok)] = {"description": _STATUS_TEXT.get(ok, "OK"), "content": {
                    "application/json": {"schema": refs[(meta.response, "serialization")]}}}
            else:
                op["responses"][str(ok)] = {"description": _STATUS_TEXT.get(ok, "OK")}
            if meta and meta.body is not None:
                op["requestBody"] = {"required": True, "content": {
                    "application/json": {"schema": refs[(meta.body, "validation")]}}}
            error_ref = {"$ref": REF.format(model=_FAMILY_ERROR[family])}
            errors = dict(meta.errors) if meta else {}
            if meta and (meta.query or meta.path or meta.body):
                errors.setdefault(400, "Invalid parameters")
                if meta.body and family != "platform":
                    errors.setdefault(422, "Invalid body")
            probe = bool(meta and meta.probe)
            if method in MUTATING and not probe:
                errors.setdefault(401, _STATUS_TEXT[401])
                errors.setdefault(403, _STATUS_TEXT[403])
                op["security"] = [{"ApiKey": []}, {"BearerAuth": []}]
            elif settings.auth_reads and not probe:
                errors.setdefault(401, _STATUS_TEXT[401])
                op["security"] = [{"ApiKey": []}, {"BearerAuth": []}]
            for status, text in sorted(errors.items()):
                op["responses"].setdefault(str(status), {
                    "description": text, "content": {"application/json": {"schema": error_ref}}})
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Vigil API", "version": app.config.get("VIGIL_VERSION", "0.1.0"),
                 "description": "Task-queue backbone and operations API for AI camera pipelines. "
                                "Errors use the envelope of each path family (see docs/api.md)."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "BearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    }

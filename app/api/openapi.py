"""The API's own OpenAPI 3.1 document (`/api/openapi.json`), built once per app by
`app.api.kit.openapi` from the routes' `@endpoint` declarations."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from app.api.kit.endpoint import endpoint
from app.api.kit.openapi import build_document

bp = Blueprint("openapi", __name__)


@bp.get("/api/openapi.json")
@endpoint(
    summary="This API's OpenAPI 3.1 document",
    probe=True,
    offline=True,
    tags=["meta"],
    content={"application/json": {"type": "object", "description": "OpenAPI 3.1 document"}},
)
def openapi_document():
    app = current_app._get_current_object()
    doc = app.extensions.get("vigil_openapi")
    if doc is None:
        doc = app.extensions["vigil_openapi"] = build_document(app)
    return jsonify(doc)

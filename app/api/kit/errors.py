"""Errors in the envelope of the family a path belongs to (spec README):

* `/api/v1/platform/...` (000): `{"success": false, "error": {"code", "message", ...}}`
* `/api/v1/monitoring/...` (002): `{"code", "message", ...}`
* everything else (001/003/004, probes): `{"detail": "..."}`

Every error a client can see goes through `render_error`, including 404/405 from routing and
unexpected exceptions (a 500 that carries a request id, never a stack trace).
"""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from app.core.errors import ServiceError

log = logging.getLogger(__name__)

PLATFORM_PREFIX = "/api/v1/platform/"
MONITORING_PREFIX = "/api/v1/monitoring/"

_DEFAULT_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 422: "validation_error",
    429: "rate_limited", 500: "internal_error", 503: "service_unavailable",
}


class ApiError(Exception):
    """An error a route handler or service raises to answer with a given status."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _DEFAULT_CODES.get(status, "error")
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra or {}


def family_of(path: str) -> str:
    if path.startswith(PLATFORM_PREFIX):
        return "platform"
    if path.startswith(MONITORING_PREFIX):
        return "monitoring"
    return "system"


def error_body(family: str, status: int, code: str, message: str, errors: list[dict[str, Any]] | None = None,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    request_id = getattr(g, "request_id", None)
    if family == "platform":
        err: dict[str, Any] = {"code": code, "message": message}
        if errors:
            err["details"] = errors
        if request_id:
            err["request_id"] = request_id
        body: dict[str, Any] = {"success": False, "error": err}
    elif family == "monitoring":
        body = {"code": code, "message": message}
        if errors:
            body["errors"] = errors
        if request_id:
            body["request_id"] = request_id
    else:
        body = {"detail": message}
        if errors:
            body["errors"] = errors
        if request_id:
            body["request_id"] = request_id
    if extra:
        body.update(extra)
    return body


def render_error(err: ApiError) -> Response:
    response = jsonify(error_body(family_of(request.path), err.status, err.code, err.message, err.errors,
                                  err.extra))
    response.status_code = err.status
    for key, value in err.headers.items():
        response.headers[key] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(err: ApiError) -> Response:
        return render_error(err)

    @app.errorhandler(ServiceError)
    def _service_error(err: ServiceError) -> Response:
        return render_error(ApiError(err.status, err.message, code=err.code, errors=err.errors, extra=err.extra))

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
        message = err.description or err.name
        if status == 404:
            message = f"No such endpoint: {request.method} {request.path}"
        elif status == 405:
            message = f"Method {request.method} is not allowed on {request.path}"
        headers = {}
        if status == 405 and hasattr(err, "valid_methods") and err.valid_methods:
            headers["Allow"] = ", ".join(sorted(err.valid_methods))
        return render_error(ApiError(status, message, headers=headers))

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return render_error(ApiError(500, "Internal server error; quote the request id when reporting it."))

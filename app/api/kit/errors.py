"""Errors in the envelope of the family a path belongs to (spec README, `envelopes.py`):

* `/api/v1/platform/...` (platform API): `{"success": false, "error": {"code", "message", ...}}`
* `/api/v1/monitoring/...` (AI Monitoring API): `{"code", "message", ...}`
* everything else (the system family, probes): `{"detail": "..."}`

Every error a client can see goes through `render_error`, including 404/405 from routing, 413 from
the body limit, Redis or the database going away (503, never a 500) and unexpected exceptions (a
500 that carries a request id, never a stack trace). Each body is checked against the model the
operation documents for its status, so the OpenAPI document cannot promise another shape.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, Response, current_app, g, jsonify, request
from pydantic import ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from app.api.kit.envelopes import FAMILY_ERROR, MONITORING_PREFIX, PLATFORM_PREFIX, family_of
from app.api.kit.meta import meta_of
from app.core.errors import ServiceError

__all__ = [
    "ApiError",
    "MONITORING_PREFIX",
    "PLATFORM_PREFIX",
    "error_body",
    "family_of",
    "register_error_handlers",
    "render_error",
]

log = logging.getLogger(__name__)

_DEFAULT_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error a route handler or service raises to answer with a given status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _DEFAULT_CODES.get(status, "error")
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra or {}


class ResponseDrift(RuntimeError):
    """A handler answered something its OpenAPI entry does not describe: a bug, answered 500."""


def error_body(
    family: str,
    status: int,
    code: str,
    message: str,
    errors: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
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


def _documented_model(family: str, status: int) -> Any:
    """The model the current route documents for an error `status`, when it declares its answers."""
    view = current_app.view_functions.get(request.endpoint) if request.url_rule is not None else None
    meta = meta_of(view)
    if meta is None or not meta.checked:
        return None
    return meta.wire_model(status, family) or FAMILY_ERROR[family]


def render_error(err: ApiError) -> Response:
    family = family_of(request.path)
    body = error_body(family, err.status, err.code, err.message, err.errors, err.extra)
    model = _documented_model(family, err.status) if err.status != 500 else None
    if model is not None:
        try:
            model.model_validate(body)
        except ValidationError as exc:
            raise ResponseDrift(
                f"{err.status} body of {request.endpoint} does not match {model.__name__}: {exc}"
            ) from None
    response = jsonify(body)
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

    @app.errorhandler(redis.RedisError)
    def _redis_down(err: redis.RedisError) -> Response:
        log.warning("Redis unavailable on %s %s: %s", request.method, request.path, err)
        return render_error(ApiError(503, f"Redis unavailable: {type(err).__name__}", code="service_unavailable"))

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def _database_down(err: OperationalError | InterfaceError) -> Response:
        log.warning("database unavailable on %s %s: %s", request.method, request.path, err)
        return render_error(
            ApiError(503, f"Database unavailable: {type(err.orig).__name__}", code="service_unavailable")
        )

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
        message = err.description or err.name
        if status == 404:
            message = f"No such endpoint: {request.method} {request.path}"
        elif status == 405:
            message = f"Method {request.method} is not allowed on {request.path}"
        elif status == 413:
            limit = request.max_content_length
            message = f"Request body larger than {limit} bytes" if limit else "Request body too large"
        headers = {}
        if status == 405 and hasattr(err, "valid_methods") and err.valid_methods:
            headers["Allow"] = ", ".join(sorted(err.valid_methods))
        return render_error(ApiError(status, message, headers=headers))

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return render_error(ApiError(500, "Internal server error; quote the request id when reporting it."))

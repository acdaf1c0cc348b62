"""Errors services raise; the API renders them in each family's envelope (app/api/errors.py).

Services know nothing of HTTP, but each error says which status it means, so the mapping lives in
one place instead of in every handler.
"""
from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, errors: list[dict[str, Any]] | None = None,
                 extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.errors = errors
        self.extra = extra


class InvalidInput(ServiceError):
    status = 400
    code = "validation_error"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class Unavailable(ServiceError):
    status = 503
    code = "service_unavailable"

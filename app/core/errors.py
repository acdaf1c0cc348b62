"""Errors services raise; the API renders them in each family's envelope (app/api/kit/errors.py).

Services know nothing of HTTP, but each error says which status it means, so the mapping lives in
one place instead of in every handler.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ServiceError(Exception):
    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ):
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


def checked(model: type[M], values: M | dict[str, Any]) -> M:
    """`values` validated by `model`, or InvalidInput naming every bad field: service callers other
    than the API (which validates first, answering 422) get the same rules."""
    if isinstance(values, model):
        return values
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        errors = [
            {
                "location": "body",
                "field": ".".join(str(p) for p in e["loc"]) or None,
                "message": e["msg"],
                "type": e["type"],
            }
            for e in exc.errors(include_url=False)
        ]
        raise InvalidInput(
            "Invalid values: " + "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors), errors=errors
        ) from None

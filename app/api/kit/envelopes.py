"""The three path families and their envelopes, as pydantic models (spec README, docs/api.md):

* `/api/v1/platform/...` (platform API): `{"success": true, "data": ...}`; errors
  `{"success": false, "error": {"code", "message", "details"?, "request_id"?}}`
* `/api/v1/monitoring/...` (AI Monitoring API): bare objects; errors `{"code", "message", "errors"?, "request_id"?}`
* everything else (the system family, probes): bare objects; errors `{"detail", "errors"?, "request_id"?}`

The OpenAPI document takes its error schemas from these models and `render_error` checks every
error body against them (or against the operation's own error model), so the two cannot disagree.
Error envelopes admit extra top-level fields (`running`, `job_id`, ...): an operation that adds
some declares a subclass naming them.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

PLATFORM_PREFIX = "/api/v1/platform/"
MONITORING_PREFIX = "/api/v1/monitoring/"


def family_of(path: str) -> str:
    if path.startswith(PLATFORM_PREFIX):
        return "platform"
    if path.startswith(MONITORING_PREFIX):
        return "monitoring"
    return "system"


class Answer(BaseModel):
    """Base of every success body model: a field the model does not name is a drift, not a bonus."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    """One problem of a request: where (`query`, `path`, `body`), which field, what."""

    model_config = ConfigDict(extra="allow")

    location: str = Field(description="query, path or body")
    field: str | None = Field(None, description="The field, dotted for nested ones; null for the whole input")
    message: str
    type: str | None = Field(None, description="Machine-readable kind of problem (pydantic's error type)")


class PlatformErrorInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str = Field(description="Machine-readable error code, e.g. validation_error, job_not_found")
    message: str
    details: list[ErrorDetail] | None = Field(None, description="Every bad field, for validation errors")
    request_id: str | None = Field(None, description="Quote it when reporting a problem")


class PlatformError(BaseModel):
    """Errors of the platform family."""

    model_config = ConfigDict(extra="allow")

    success: Literal[False]
    error: PlatformErrorInfo


class MonitoringError(BaseModel):
    """Errors of the AI Monitoring family."""

    model_config = ConfigDict(extra="allow")

    code: str
    message: str
    errors: list[ErrorDetail] | None = None
    request_id: str | None = None


class SystemError(BaseModel):
    """Errors of the system family and the probes."""

    model_config = ConfigDict(extra="allow")

    detail: str = Field(description="What went wrong, for a person")
    errors: list[ErrorDetail] | None = Field(None, description="Every bad field, for validation errors")
    request_id: str | None = Field(None, description="Quote it when reporting a problem")


FAMILY_ERROR: dict[str, type[BaseModel]] = {
    "platform": PlatformError,
    "monitoring": MonitoringError,
    "system": SystemError,
}


@cache
def platform_ok(model: type[BaseModel]) -> type[BaseModel]:
    """The platform family's success envelope around `model`: `{"success": true, "data": <model>}`."""
    envelope: Any = create_model(
        f"{model.__name__}Envelope",
        __config__=ConfigDict(extra="forbid"),
        success=(Literal[True], ...),
        data=(model, ...),
    )
    envelope.__doc__ = f"`{model.__name__}` in the platform family's success envelope."
    return envelope


def success_model(model: type[BaseModel], family: str) -> type[BaseModel]:
    """What a success body of `model` looks like on the wire in `family`."""
    return platform_ok(model) if family == "platform" else model

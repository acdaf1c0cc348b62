"""What `@endpoint` records about a route: its inputs, every answer it can give, and its links.

One record feeds three readers: the request parser (`endpoint.py`), the OpenAPI generator
(`openapi.py`) and the response checks (`endpoint.py` for success bodies, `errors.py` for error
bodies), so what the document says and what the route does come from the same declaration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from app.api.kit.envelopes import FAMILY_ERROR, success_model

# Bodies larger than this are refused with 413 before they are read (Flask's MAX_CONTENT_LENGTH,
# set by create_app; the limit is documented here and in docs/api.md).
MAX_BODY_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class Link:
    """An OpenAPI link from a success answer to another operation (by Flask endpoint name, e.g.
    `queues.get_job`), with the values it takes from this answer (`$response.body#/data/job_id`)."""

    endpoint: str
    parameters: dict[str, str]
    description: str | None = None


@dataclass(frozen=True)
class ErrorDoc:
    """A documented error status: why it happens and, when its body is not the family's plain
    envelope, the model of that body."""

    description: str
    model: type[BaseModel] | None = None


@dataclass
class EndpointMeta:
    summary: str | None = None
    description: str | None = None
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    path: type[BaseModel] | None = None
    response: type[BaseModel] | None = None  # the `status` body's model
    status: int = 200
    responses: dict[int, type[BaseModel] | None] = field(default_factory=dict)  # other success statuses
    content: dict[str, dict[str, Any]] = field(default_factory=dict)  # non-JSON success: media type -> schema
    probe: bool = False  # no auth, no envelope: health probes, metrics, this API's own document
    offline: bool = False  # touches neither Redis nor the database: never a 503 for their sake
    errors: dict[int, ErrorDoc] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    links: dict[str, Link] = field(default_factory=dict)
    list_fields: frozenset[str] = frozenset()

    @property
    def checked(self) -> bool:
        """Whether answers are checked against the declaration: routes that declare what they
        answer (`response` or `content`). A route declaring neither is not checked yet."""
        return self.response is not None or bool(self.content)

    def success_statuses(self) -> dict[int, type[BaseModel] | None]:
        """Every success status the route answers, with the model of its body (None: no JSON body)."""
        return {self.status: self.response, **self.responses}

    def wire_model(self, status: int, family: str) -> type[BaseModel] | None:
        """The model a body of `status` must match on the wire (envelope included), if any."""
        statuses = self.success_statuses()
        if status in statuses:
            model = statuses[status]
            return None if model is None else success_model(model, family)
        doc = self.errors.get(status)
        if doc is not None and doc.model is not None:
            return doc.model
        return FAMILY_ERROR[family] if status >= 400 else None


def meta_of(view: Callable[..., Any] | None) -> EndpointMeta | None:
    return getattr(view, "__vigil__", None)

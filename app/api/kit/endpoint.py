"""Declare a route's inputs once; get validation, clear 4xx errors and its OpenAPI entry from it.

    @bp.get("/queues/<queue_name>/jobs")
    @endpoint(query=JobsQuery, summary="List jobs in a queue")
    def list_jobs(queue_name: str, query: JobsQuery): ...

Query strings and JSON bodies are validated with pydantic models; path parameters with an
optional `path` model. A validation failure raises `ApiError` with every bad field named, which
the error handlers render in the family's envelope. Query/path errors are 400; body errors are
422 (003/004 say so for PATCH /config), except in the 000 family, whose document says 400.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Callable

from flask import request
from pydantic import BaseModel, ValidationError

from app.api.kit.errors import ApiError, family_of


@dataclass
class EndpointMeta:
    summary: str | None = None
    description: str | None = None
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    path: type[BaseModel] | None = None
    response: type[BaseModel] | None = None  # the 2xx body's model: its schema in the OpenAPI document
    status: int = 200
    probe: bool = False  # no auth, no envelope: health probes, metrics, this API's own document
    errors: dict[int, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    list_fields: frozenset[str] = frozenset()


def _list_fields(model: type[BaseModel] | None) -> frozenset[str]:
    if model is None:
        return frozenset()
    names = set()
    for name, info in model.model_fields.items():
        ann = info.annotation
        candidates = typing.get_args(ann) if typing.get_origin(ann) in (typing.Union, getattr(
            __import__("types"), "UnionType", None)) else (ann,)
        if any(typing.get_origin(c) in (list, tuple, set) for c in candidates):
            names.add(info.alias or name)
    return frozenset(names)


def describe_errors(exc: ValidationError, location: str) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        out.append({"location": location, "field": loc or None, "message": err.get("msg", "invalid"),
                    "type": err.get("type")})
    return out


def _summary(errors: list[dict[str, Any]]) -> str:
    parts = []
    for e in errors[:5]:
        where = {"query": "query parameter", "path": "path parameter", "body": "field"}[e["location"]]
        parts.append(f"{where} '{e['field']}': {e['message']}" if e["field"] else f"{e['location']}: {e['message']}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "Invalid request: " + "; ".join(parts) + more


def validation_failed(errors: list[dict[str, Any]], location: str) -> ApiError:
    status = 422 if location == "body" and family_of(request.path) != "platform" else 400
    return ApiError(status, _summary(errors), code="validation_error", errors=errors)


def parse_query(model: type[BaseModel], list_fields: frozenset[str] = frozenset()) -> BaseModel:
    args = request.args
    data = {key: (args.getlist(key) if key in list_fields else args.get(key)) for key in args.keys()}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_failed(describe_errors(exc, "query"), "query") from None


def parse_body(model: type[BaseModel]) -> BaseModel:
    if not request.get_data(cache=True):
        data: Any = {}
    else:
        data = request.get_json(silent=True, force=True)
        if data is None:
            raise ApiError(400, "Request body is not valid JSON.", code="invalid_json")
    if not isinstance(data, dict):
        raise ApiError(400 if family_of(request.path) == "platform" else 422,
                       "Request body must be a JSON object.", code="validation_error")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_failed(describe_errors(exc, "body"), "body") from None


def endpoint(*, summary: str | None = None, query: type[BaseModel] | None = None,
             body: type[BaseModel] | None = None, path: type[BaseModel] | None = None,
             response: type[BaseModel] | None = None, status: int = 200, probe: bool = False,
             errors: dict[int, str] | None = None,
             tags: list[str] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Attach input models and documentation to a view; see the module docstring."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        doc = (fn.__doc__ or "").strip()
        first, _, rest = doc.partition("\n")
        meta = EndpointMeta(summary=summary or first or fn.__name__.replace("_", " "),
                            description=rest.strip() or None, query=query, body=body, path=path,
                            response=response, status=status, probe=probe, errors=dict(errors or {}), tags=list(tags or []),
                            list_fields=_list_fields(query))

        @wraps(fn)
        def view(**kwargs: Any) -> Any:
            if path is not None:
                try:
                    kwargs = path.model_validate(kwargs).model_dump()
                except ValidationError as exc:
                    raise validation_failed(describe_errors(exc, "path"), "path") from None
            if query is not None:
                kwargs["query"] = parse_query(query, meta.list_fields)
            if body is not None:
                kwargs["body"] = parse_body(body)
            result = fn(**kwargs)
            if status != 200 and isinstance(result, (dict, list)):
                return result, status
            return result

        view.__vigil__ = meta  # type: ignore[attr-defined]
        return view

    return decorate


def meta_of(view: Callable[..., Any] | None) -> EndpointMeta | None:
    return getattr(view, "__vigil__", None)

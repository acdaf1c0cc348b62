"""Declare a route's inputs and answers once; get validation, clear 4xx errors, checked responses
and its OpenAPI entry from it.

    @bp.get("/queues/<queue_name>/jobs")
    @endpoint(query=JobsQuery, path=QueuePath, response=JobPage, summary="List jobs in a queue",
              errors={404: "Unknown queue"})
    def list_jobs(queue_name: str, query: JobsQuery): ...

Query strings and JSON bodies are validated with pydantic models; path parameters with an
optional `path` model. A validation failure raises `ApiError` with every bad field named, which
the error handlers render in the family's envelope. Query/path errors are 400; body errors are
422 (the System API and the System Operations API say so for PATCH /config), except in the
platform family, whose document says 400.

Before a model sees a body, the body must be JSON (`application/json` or `application/*+json`,
else 415), UTF-8, parse (no `NaN`, no number that does not fit a double), nest at most
`MAX_DEPTH` levels and fit `MAX_BODY_BYTES` (413). No string anywhere in the input (query, path,
body, object keys included) may hold a NUL character: PostgreSQL cannot store one. A whole number
written `5.0` is the integer 5, as in JSON Schema; a body model that wants JSON's types exactly
(`"5"` and `true` are not numbers) says `strict=True` in its config.

What a handler answers is checked against what it declares: a success status it does not declare,
or a JSON body that does not match the status's model (strictly, as a client reads the JSON), is a
`ResponseDrift` and a 500, so the document cannot promise what the code does not do.
"""

from __future__ import annotations

import inspect
import json
import math
import typing
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Response, current_app, request
from pydantic import BaseModel, ValidationError

from app.api.kit.errors import ApiError, ResponseDrift, family_of
from app.api.kit.meta import MAX_BODY_BYTES, EndpointMeta, ErrorDoc, Link, meta_of

__all__ = ["EndpointMeta", "ErrorDoc", "Link", "MAX_BODY_BYTES", "MAX_DEPTH", "endpoint", "meta_of"]

MAX_DEPTH = 32  # nesting levels of a JSON body: far beyond any document here, far below recursion limits


def _list_fields(model: type[BaseModel] | None) -> frozenset[str]:
    if model is None:
        return frozenset()
    names = set()
    for name, info in model.model_fields.items():
        ann = info.annotation
        candidates = (
            typing.get_args(ann)
            if typing.get_origin(ann) in (typing.Union, getattr(__import__("types"), "UnionType", None))
            else (ann,)
        )
        if any(typing.get_origin(c) in (list, tuple, set) for c in candidates):
            names.add(info.alias or name)
    return frozenset(names)


def _field_path(loc: tuple[Any, ...], data: Any) -> str:
    """A pydantic error location as the dotted field the client sent. Discriminated unions put the
    tag in the location (`('notification', 'payload', 'webhook', 'url')`); an element that is not a
    key of the input where it stands, and is not the last one, is such a tag and is left out."""
    parts: list[str] = []
    node = data
    for i, part in enumerate(loc):
        if part == "__root__":
            continue
        if isinstance(node, dict) and part not in node and i < len(loc) - 1:
            continue
        parts.append(str(part))
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return ".".join(parts)


def describe_errors(exc: ValidationError, location: str, data: Any = None) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors(include_url=False):
        loc = _field_path(tuple(err.get("loc", ())), data)
        discriminator = (err.get("ctx") or {}).get("discriminator")
        if err.get("type", "").startswith("union_tag") and discriminator:
            loc = ".".join(p for p in (loc, str(discriminator).strip("'")) if p)
        out.append(
            {"location": location, "field": loc or None, "message": err.get("msg", "invalid"), "type": err.get("type")}
        )
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


def _nul_errors(values: dict[str, Any], location: str) -> list[dict[str, Any]]:
    return [
        {
            "location": location,
            "field": key.replace("\x00", "\\0") or None,
            "message": "NUL characters are not accepted",
            "type": "string_nul",
        }
        for key, value in values.items()
        if "\x00" in key
        or (isinstance(value, str) and "\x00" in value)
        or (isinstance(value, list) and any("\x00" in v for v in value))
    ]


def parse_query(model: type[BaseModel], list_fields: frozenset[str] = frozenset()) -> BaseModel:
    args = request.args
    data = {key: (args.getlist(key) if key in list_fields else args.get(key)) for key in args.keys()}
    bad = _nul_errors(data, "query")
    if bad:
        raise validation_failed(bad, "query")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_failed(describe_errors(exc, "query", data), "query") from None


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _number(text: str) -> float | int:
    """A JSON number written with a fraction or an exponent. JSON Schema counts `5.0` as an integer,
    so a whole value is one here too (strict integer fields then take it, as the schema promises)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} does not fit a double")
    return int(value) if value.is_integer() else value


def _body_problem(data: Any) -> str | None:
    """Why a parsed body is refused before validation (NUL in a string, nested too deep), or None."""
    stack: list[tuple[Any, int, str]] = [(data, 1, "")]
    while stack:
        value, depth, where = stack.pop()
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        if isinstance(value, str):
            if "\x00" in value:
                return f"NUL characters are not accepted ({where or 'body'})"
        elif isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    return f"NUL characters are not accepted (a key in {where or 'body'})"
                stack.append((item, depth + 1, f"{where}.{key}" if where else key))
        elif isinstance(value, list):
            stack.extend((item, depth + 1, f"{where}[{i}]") for i, item in enumerate(value))
    return None


def read_json_body() -> Any:
    """The request's JSON body, `{}` when there is none, or the 4xx that says what is wrong with it."""
    request.max_content_length = MAX_BODY_BYTES
    raw = request.get_data(cache=True)  # 413 past the limit, even without a Content-Length
    if not raw:
        return {}
    if not _is_json(request.mimetype):
        got = request.mimetype or "no Content-Type"
        raise ApiError(
            415,
            f"Request bodies are JSON: send Content-Type: application/json (got {got}).",
            code="unsupported_media_type",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"Request body is not valid UTF-8 (byte {exc.start}).", code="invalid_json") from None
    try:
        data = json.loads(text, parse_constant=_no_constants, parse_float=_number)
    except RecursionError:
        raise ApiError(400, f"Request body is nested deeper than {MAX_DEPTH} levels.", code="invalid_json") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, a number too large, an integer of >4300 digits
        raise ApiError(400, f"Request body is not valid JSON: {str(exc)[:200]}", code="invalid_json") from None
    problem = _body_problem(data)
    if problem:
        raise ApiError(
            400 if family_of(request.path) == "platform" else 422,
            f"Invalid request: {problem}.",
            code="validation_error",
        )
    return data


def parse_body(model: type[BaseModel]) -> BaseModel:
    data = read_json_body()
    if not isinstance(data, dict):
        raise ApiError(
            400 if family_of(request.path) == "platform" else 422,
            "Request body must be a JSON object.",
            code="validation_error",
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_failed(describe_errors(exc, "body", data), "body") from None


def check_response(meta: EndpointMeta, response: Response) -> None:
    """Raise ResponseDrift unless `response` is an answer `meta` documents, in its documented shape."""
    if not meta.checked:
        return
    status = response.status_code
    family = family_of(request.path)
    if status not in meta.success_statuses() and status not in meta.errors:
        raise ResponseDrift(f"{request.endpoint} answered {status}, which it does not document")
    model = meta.wire_model(status, family)
    if model is None or response.direct_passthrough or response.is_streamed:
        return
    if response.mimetype != "application/json":
        raise ResponseDrift(f"{request.endpoint} answered {status} with {response.mimetype}, not JSON")
    try:
        model.model_validate_json(response.get_data(), strict=True)
    except ValidationError as exc:
        raise ResponseDrift(f"{status} body of {request.endpoint} does not match {model.__name__}: {exc}") from None


def _error_docs(errors: dict[int, str | tuple[str, type[BaseModel]]] | None) -> dict[int, ErrorDoc]:
    out = {}
    for status, doc in (errors or {}).items():
        out[status] = ErrorDoc(doc[0], doc[1]) if isinstance(doc, tuple) else ErrorDoc(doc)
    return out


def endpoint(
    *,
    summary: str | None = None,
    query: type[BaseModel] | None = None,
    body: type[BaseModel] | None = None,
    path: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    responses: dict[int, type[BaseModel] | None] | None = None,
    content: dict[str, dict[str, Any]] | None = None,
    probe: bool = False,
    offline: bool = False,
    errors: dict[int, str | tuple[str, type[BaseModel]]] | None = None,
    links: dict[str, Link] | None = None,
    tags: list[str] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Attach input models, answers and documentation to a view; see the module docstring.

    `response` is the model of the `status` answer (in the platform family the generator and the check
    wrap it in `{"success": true, "data": ...}`); `responses` adds other success statuses; `content`
    documents non-JSON success bodies (media type -> schema). `errors` maps each error status the
    handler itself can cause to why, or to `(why, model)` when its body adds fields to the family's
    envelope. Statuses every route of a kind shares (400/422 for invalid input, 401/403, 413/415 for
    bodies, 503 for Redis or the database) are added by the generator. Without `summary`, the
    docstring's first line is the summary and the rest the description; with it, the whole docstring
    is the description.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        doc = inspect.cleandoc(fn.__doc__ or "")
        if summary:
            title, description = summary, doc
        else:
            first, _, rest = doc.partition("\n")
            title, description = first or fn.__name__.replace("_", " "), rest.strip()
        meta = EndpointMeta(
            summary=title,
            description=description or None,
            query=query,
            body=body,
            path=path,
            response=response,
            status=status,
            responses=dict(responses or {}),
            content=dict(content or {}),
            probe=probe,
            offline=offline,
            errors=_error_docs(errors),
            tags=list(tags or []),
            links=dict(links or {}),
            list_fields=_list_fields(query),
        )

        @wraps(fn)
        def view(**kwargs: Any) -> Any:
            bad = _nul_errors(kwargs, "path")
            if bad:
                raise validation_failed(bad, "path")
            if path is not None:
                try:
                    kwargs = path.model_validate(kwargs).model_dump()
                except ValidationError as exc:
                    raise validation_failed(describe_errors(exc, "path", kwargs), "path") from None
            if query is not None:
                kwargs["query"] = parse_query(query, meta.list_fields)
            if body is not None:
                kwargs["body"] = parse_body(body)
            result = fn(**kwargs)
            if status != 200 and isinstance(result, (dict, list)):
                result = (result, status)
            rv = current_app.make_response(result)
            check_response(meta, rv)
            return rv

        view.__vigil__ = meta  # type: ignore[attr-defined]
        return view

    return decorate

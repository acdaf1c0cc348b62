"""Request ids: accepted from `X-Request-ID` when sane, generated otherwise, echoed on every
response, stamped on log lines and carried into the Celery messages a request sends."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

from app.core.context import request_id_var

HEADER = "X-Request-ID"
_SANE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def _begin() -> None:
    incoming = request.headers.get(HEADER, "")
    rid = incoming if _SANE.match(incoming) else f"req_{uuid.uuid4().hex}"
    g.request_id = rid
    g.request_id_token = request_id_var.set(rid)


def _end(response: Response) -> Response:
    rid = getattr(g, "request_id", None)
    if rid:
        response.headers[HEADER] = rid
    return response


def _teardown(_exc: BaseException | None) -> None:
    token = g.pop("request_id_token", None)
    if token is not None:
        request_id_var.reset(token)


def init_request_ids(app: Flask) -> None:
    # Registered first so even an auth failure carries the id.
    app.before_request_funcs.setdefault(None, []).insert(0, _begin)
    app.after_request(_end)
    app.teardown_request(_teardown)

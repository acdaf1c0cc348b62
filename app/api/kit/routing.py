"""The URL converter the families share: a path segment that is not one of its sibling routes."""

from __future__ import annotations

import re

from flask import Flask
from werkzeug.routing import BaseConverter, Map


class OtherThan(BaseConverter):
    """`/jobs/<other_than(batch):job_id>`: any segment but `batch`, so `/jobs/batch` belongs to its own
    route alone. Without it, `GET /jobs/batch` looked up a job called "batch", and `OPTIONS /jobs/batch`
    advertised GET and DELETE, which that path does not have; now the one is a 405 naming the methods
    it has, and the other lists just those."""

    def __init__(self, map: Map, *names: str) -> None:
        super().__init__(map)
        alternatives = "|".join(re.escape(name) for name in names)
        self.regex = rf"(?!(?:{alternatives})$)[^/]+"


def init_routing(app: Flask) -> None:
    """Before any blueprint's rules are added: a rule finds its converter when it is added."""
    app.url_map.converters["other_than"] = OtherThan

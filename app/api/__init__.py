"""HTTP layer: one blueprint per area. Handlers validate, call a service, shape the response."""
from __future__ import annotations

from flask import Flask

from app.api import health, openapi
from app.api.auth import init_auth
from app.api.errors import register_error_handlers
from app.api.request_ids import init_request_ids

BLUEPRINTS = (health.bp, openapi.bp)


def register(app: Flask) -> None:
    register_error_handlers(app)
    init_auth(app)
    init_request_ids(app)
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)

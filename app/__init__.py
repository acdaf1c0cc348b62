"""Vigil: the Flask API, the models and the domain services the workers share."""

from __future__ import annotations

from flask import Flask

from app.core.settings import Settings, get_settings

__version__ = "0.1.0"


def create_app(settings: Settings | None = None) -> Flask:
    """Build the API. `settings` defaults to the environment's (tests pass their own)."""
    # Imported here, not at the top: every `app.*` import runs this package, and only the API needs
    # the handlers and Flask's side.
    from app import api, console
    from app.api.kit.meta import MAX_BODY_BYTES
    from app.observability.logging_setup import configure_logging

    settings = settings or get_settings()
    configure_logging(settings.log_level, "api", settings)
    flask_app = Flask(__name__)
    flask_app.config.update(
        VIGIL_SETTINGS=settings, VIGIL_VERSION=__version__, JSON_SORT_KEYS=False, MAX_CONTENT_LENGTH=MAX_BODY_BYTES
    )
    flask_app.json.sort_keys = False
    api.register(flask_app)
    console.register(flask_app)  # the operations console, served under /console
    return flask_app

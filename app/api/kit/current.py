"""What a handler needs of the running app, read one way: the settings it was built with (tests
build apps with their own settings, so handlers never call `get_settings()`) and its version."""

from __future__ import annotations

from flask import current_app

from app.core.settings import Settings


def current_settings() -> Settings:
    """The settings of the app serving this request."""
    return current_app.config["VIGIL_SETTINGS"]


def current_version() -> str:
    """The version the app reports (OpenAPI document, health)."""
    return current_app.config["VIGIL_VERSION"]

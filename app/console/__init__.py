"""The operations console: server-rendered pages at /console over the domain services the API handlers call.

It is a Flask app of its own, mounted on the API's WSGI app under /console, not one more blueprint of the API's,
because the API's hooks belong to the API: its `before_request` wants X-API-Key or a Bearer token on every POST (a
browser's form sends neither), its error handlers answer JSON envelopes, and its OpenAPI document and auth tests walk
every rule of its URL map. The console has a session cookie, CSRF tokens and HTML error pages instead, and the same
process, port and settings as the API (`create_app` mounts it), so there is no second server to run.

Layers: the console is an entry point like `app.api`. It imports domain packages, `app.api.kit` (the credential
checks, the settings accessor, request ids) and core; nothing imports it but `create_app`.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from app.core.settings import Settings

PREFIX = "/console"
SESSION_HOURS = 12  # an API-key session's life; a JWT session also ends when its token expires


def create_console(settings: Settings, version: str) -> Flask:
    """The console app, with its pages, guards and error pages; served under PREFIX by `register`."""
    from app.api.kit.request_ids import init_request_ids
    from app.console import alerts, auth, jobs, login, pipeline, queues, system, web, workers

    console = Flask(__name__, static_url_path="/static")
    console.config.update(
        VIGIL_SETTINGS=settings,
        VIGIL_VERSION=version,
        SECRET_KEY=auth.session_secret(settings),
        SESSION_COOKIE_NAME="vigil_console",
        SESSION_COOKIE_PATH=PREFIX,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
        MAX_CONTENT_LENGTH=64 * 1024,
        SEND_FILE_MAX_AGE_DEFAULT=300,
    )
    console.session_interface = auth.ConsoleSessions()
    init_request_ids(console)  # the same ids as the API's: stamped on log lines and audit entries
    console.before_request(auth.guard)
    web.init(console)
    for bp in (login.bp, queues.bp, jobs.bp, pipeline.bp, alerts.bp, workers.bp, system.bp):
        console.register_blueprint(bp)
    return console


def register(api_app: Flask) -> None:
    """Serve the console from the API's own WSGI app, under PREFIX."""
    console = create_console(api_app.config["VIGIL_SETTINGS"], api_app.config["VIGIL_VERSION"])
    api_app.extensions["vigil_console"] = console
    api_app.wsgi_app = DispatcherMiddleware(api_app.wsgi_app, {PREFIX: console})  # type: ignore[method-assign]

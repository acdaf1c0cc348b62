"""Signing in and out of the console."""

from __future__ import annotations

from flask import Blueprint, Response, redirect, render_template, request, url_for

from app.console import auth
from app.console.web import ok

bp = Blueprint("login", __name__)


def _next() -> str | None:
    return auth.local_target(request.values.get("next"))


@bp.get("/login")
def form() -> Response | str:
    if auth.current_user() is not None:
        return redirect(request.script_root + (_next() or "/queues"), 303)
    return render_template("console/login.html", next=_next(), kind="api_key", error=None)


@bp.post("/login")
def submit() -> Response | tuple[str, int]:
    kind = "jwt" if request.form.get("kind") == "jwt" else "api_key"
    try:
        principal, expires_at = auth.check_credential(kind, request.form.get("credential", ""))
    except auth.Refused as refused:
        return render_template("console/login.html", next=_next(), kind=kind, error=refused.message), 401
    auth.start_session(principal, expires_at)
    auth.audited("console_login", "console_session", None, {"method": principal.method})
    return redirect(request.script_root + (_next() or "/queues"), 303)


@bp.post("/logout")
def logout() -> Response:
    auth.audited("console_logout", "console_session")
    auth.end_session()
    ok("Signed out.")
    return redirect(url_for("login.form"), 303)

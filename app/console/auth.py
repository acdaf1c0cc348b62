"""Who is using the console: a login with the API key or a JWT, a signed session cookie, CSRF tokens, roles.

* Credentials are checked by the API's own `principal_from` (app/api/kit/auth.py), so a key or token the API
  refuses is refused here, with the same message, and a JWT must carry the same claims.
* The session is Flask's signed cookie (HttpOnly, SameSite=Strict, path /console), signed with a key derived
  from VIGIL_API_KEY and VIGIL_JWT_SECRET: every API process derives the same one, and rotating either secret
  ends every console session. A JWT session also ends when its token expires.
* Every POST carries the session's CSRF token (a hidden field, or the X-CSRF-Token header), compared in constant
  time; the login form has one too, set when the form was shown.
* Changing anything needs a role the API's mutating routes accept: every console action is in the platform or
  system family, whose routes want `OPS_ROLES` (or admin). Other valid credentials make a read-only session.
* Actions are audited as the API audits them: the actor is `<method>:<subject>`, the same string the API writes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
from flask import Flask, Response, current_app, g, has_request_context, redirect, request, session, url_for
from flask.sessions import SecureCookieSessionInterface

from app.api.kit.auth import OPS_ROLES, Principal, principal_from
from app.api.kit.current import current_settings
from app.api.kit.errors import ApiError
from app.core.settings import Settings
from app.observability import audit
from app.observability.audit import Audit

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
MAX_CREDENTIAL = 8192
# Endpoints a visitor without a session may reach: the login form, the stylesheets and scripts it loads.
PUBLIC_ENDPOINTS = frozenset({"login.form", "login.submit", "static", "web.palette"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Refused(Exception):
    """A request the console will not serve; rendered as an HTML page with this status."""

    def __init__(self, status: int, title: str, message: str):
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


@dataclass(frozen=True)
class ConsoleUser:
    subject: str
    method: str  # "api_key" | "jwt"
    roles: frozenset[str]
    expires_at: float

    @property
    def actor(self) -> str:
        """The audit actor, written as the API writes it (`app.api.kit.auth.actor`)."""
        return f"{self.method}:{self.subject}"

    @property
    def can_act(self) -> bool:
        return Principal(self.subject, self.roles, self.method).allowed(OPS_ROLES)


class ConsoleSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the cookie marked Secure whenever the page came over HTTPS: the same
    console works on plain HTTP (`make run` on localhost) and behind TLS, and never sends its cookie in clear
    once it has been reached over TLS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or (has_request_context() and request.is_secure)


def session_secret(settings: Settings) -> bytes:
    """The session-signing key. Derived, not configured: every gunicorn worker computes the same, and a new API
    key or JWT secret invalidates the sessions made with the old one. Without either nobody can log in, and a
    random key is as good as any."""
    if not settings.api_key and not settings.jwt_secret:
        return secrets.token_bytes(32)
    material = f"{settings.api_key or ''}\x00{settings.jwt_secret or ''}".encode()
    return hmac.new(material, b"vigil-console-session-v1", hashlib.sha256).digest()


# ---- logging in -------------------------------------------------------------------------------------------------
def check_credential(kind: str, value: str) -> tuple[Principal, float]:
    """The principal `value` authenticates as, and when its session must end; Refused (401) with the API's own
    message when the API would refuse it."""
    value = value.strip()
    if not value:
        raise Refused(401, "Sign-in refused", "Paste the API key or a JWT.")
    if len(value) > MAX_CREDENTIAL or _CONTROL.search(value):
        raise Refused(401, "Sign-in refused", "That is not an API key or a JWT.")
    settings = current_settings()
    try:
        key, header = (value, "") if kind == "api_key" else (None, f"Bearer {value}")
        principal = principal_from(settings, key, header)
    except ApiError as exc:
        raise Refused(401, "Sign-in refused", exc.message) from None
    if principal is None:
        raise Refused(401, "Sign-in refused", "Paste the API key or a JWT.")
    limit = time.time() + current_app.permanent_session_lifetime.total_seconds()
    if principal.method == "jwt":
        claims = jwt.decode(value, options={"verify_signature": False})  # verified by principal_from() above
        limit = min(limit, float(claims["exp"]))
    return principal, limit


def start_session(principal: Principal, expires_at: float) -> None:
    """A new session for `principal` (a new CSRF token too: nothing of the visitor's session survives login)."""
    session.clear()
    session.permanent = True
    session.update(
        sub=principal.subject,
        method=principal.method,
        roles=sorted(principal.roles),
        exp=expires_at,
        csrf=secrets.token_urlsafe(32),
    )
    g.console_user = current_user()


def end_session() -> None:
    session.clear()


def current_user() -> ConsoleUser | None:
    """The signed-in user, or None when there is no session or it has expired."""
    if "sub" not in session:
        return None
    try:
        user = ConsoleUser(
            str(session["sub"]), str(session["method"]), frozenset(map(str, session["roles"])), float(session["exp"])
        )
    except (KeyError, TypeError, ValueError):
        return None
    return user if user.expires_at > time.time() else None


def user() -> ConsoleUser:
    """The request's user (the guard has made sure there is one)."""
    return g.console_user


def csrf_token() -> str:
    """The session's CSRF token, made when first needed (the login form needs one before there is a user)."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def _csrf_ok() -> bool:
    expected = session.get("csrf")
    sent = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    return bool(expected) and hmac.compare_digest(str(expected).encode(), sent.encode())


def local_target(value: str | None) -> str | None:
    """`value` when it is a path inside the console (`/queues?x=1`), else None: `next` and `back` never
    redirect off the console."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or _CONTROL.search(value):
        return None
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else None


def login_redirect() -> Response:
    target = url_for("login.form", next=request.full_path.rstrip("?") if request.method == "GET" else None)
    if request.headers.get("HX-Request"):
        # A live region polling after the session ended: htmx navigates the whole page instead of swapping the
        # login form into the region.
        return Response("", 200, {"HX-Redirect": target})
    return redirect(target, 303)


def guard() -> Response | None:
    """before_request: a session for every page but the login's, and the CSRF token on every POST."""
    g.console_user = current_user()
    if request.endpoint in PUBLIC_ENDPOINTS:
        if request.method == "POST" and not _csrf_ok():
            raise Refused(
                400,
                "Form refused",
                "The form's security token is missing or stale (CSRF protection). Reload the page and try again.",
            )
        return None
    if g.console_user is None:
        if "sub" in session:
            end_session()
        return login_redirect()
    if request.method == "POST" and not _csrf_ok():
        raise Refused(
            400,
            "Form refused",
            "The form's security token is missing or stale (CSRF protection). Reload the page and try again.",
        )
    return None


def require_operator() -> ConsoleUser:
    """The user, when they may change things; Refused (403) for a read-only session."""
    current = user()
    if not current.can_act:
        needed = ", ".join(sorted(OPS_ROLES | {"admin"}))
        raise Refused(
            403,
            "Read-only session",
            f"Your credentials may look but not change anything: actions need one of the roles {needed}.",
        )
    return current


# ---- audit ------------------------------------------------------------------------------------------------------
def who() -> Audit:
    """The user, address and request id, for the audit entries a service writes with its change."""
    return Audit(actor=user().actor, ip_address=request.remote_addr, request_id=getattr(g, "request_id", None))


def audited(
    action: str, resource_type: str, resource_id: str | None = None, details: dict[str, Any] | None = None
) -> None:
    """Record an audit entry for an action the service does not audit itself (the API's handlers do the same)."""
    audit.record(
        action,
        resource_type,
        resource_id,
        actor=user().actor,
        details=details,
        ip_address=request.remote_addr,
        request_id=getattr(g, "request_id", None),
        settings=current_settings(),
    )

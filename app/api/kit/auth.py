"""Authentication and roles, enforced once for the whole app in `before_request`.

Mutating methods (POST, PUT, PATCH, DELETE) always need credentials, so no route can forget to ask:
an `X-API-Key` equal to VIGIL_API_KEY (acts as `admin`), or `Authorization: Bearer <JWT>` signed
with VIGIL_JWT_SECRET whose `roles` (or `role`) claim grants a role the route's family requires.
Missing or bad credentials: 401. Valid credentials without the role: 403. Reads are open unless
VIGIL_AUTH_READS is on; health probes are always open.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

import jwt
from flask import Flask, current_app, g, request

from app.api.kit.current import current_settings
from app.api.kit.errors import ApiError, family_of
from app.api.kit.meta import meta_of
from app.core.settings import Settings

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

ADMIN = "admin"
# Roles of the AI Monitoring API ("S2"): its endpoints accept these.
MONITORING_ROLES = frozenset({"platform_admin", "system_admin", "super_admin", "ai_admin", "tenant_admin"})
# The platform API says "Ops role"; platform/system administrators may operate the queues too.
OPS_ROLES = frozenset({"ops", "platform_admin", "system_admin", "super_admin"})

FAMILY_ROLES = {"platform": OPS_ROLES, "system": OPS_ROLES, "monitoring": MONITORING_ROLES}


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str]
    method: str  # "api_key" | "jwt"

    def allowed(self, required: frozenset[str]) -> bool:
        return ADMIN in self.roles or bool(self.roles & required)


def _unauthorized(message: str) -> ApiError:
    return ApiError(
        401, message, code="unauthorized", headers={"WWW-Authenticate": 'Bearer realm="vigil", charset="UTF-8"'}
    )


def authenticate() -> Principal | None:
    """The caller's principal, None when no credentials were sent; raises 401 on bad ones."""
    return principal_from(
        current_settings(), request.headers.get("X-API-Key"), request.headers.get("Authorization", "")
    )


def principal_from(settings: Settings, key: str | None, header: str) -> Principal | None:
    """The principal of an API key or an `Authorization` header's value, None when neither is given; raises
    401 on bad ones. Every way in (a request's headers, the console's sign-in form) checks credentials here,
    so they accept and refuse exactly the same ones."""
    if key is not None:
        if settings.api_key and hmac.compare_digest(key.encode(), settings.api_key.encode()):
            return Principal("api-key", frozenset({ADMIN}), "api_key")
        raise _unauthorized("Invalid API key.")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("Authorization must be 'Bearer <token>'.")
        if not settings.jwt_secret:
            raise _unauthorized("Bearer tokens are not accepted by this server.")
        try:
            claims = jwt.decode(
                token.strip(),
                settings.jwt_secret,
                algorithms=["HS256"],
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                options={"require": ["exp", "sub"], "verify_aud": bool(settings.jwt_audience)},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("Token expired.") from None
        except jwt.InvalidTokenError as exc:
            raise _unauthorized(f"Invalid token: {exc}") from None
        roles = claims.get("roles", claims.get("role", []))
        if isinstance(roles, str):
            roles = [roles]
        if not isinstance(roles, list):
            raise _unauthorized("Invalid token: 'roles' must be a list of strings.")
        return Principal(str(claims["sub"]), frozenset(str(r) for r in roles), "jwt")
    return None


def required_roles() -> frozenset[str]:
    """The roles that may call the current request's path: its family's."""
    return FAMILY_ROLES[family_of(request.path)]


def enforce() -> None:
    """before_request hook: decide whether this request needs a principal, and check it."""
    g.principal = None
    if request.method == "OPTIONS" or request.url_rule is None:
        return  # routing errors (404/405) answer as they are
    view = current_app.view_functions.get(request.endpoint)
    meta = meta_of(view)
    if meta is not None and meta.probe:
        return
    settings = current_settings()
    mutating = request.method in MUTATING
    if not mutating and not settings.auth_reads:
        return
    principal = authenticate()
    if principal is None:
        raise _unauthorized("Credentials required: send X-API-Key or Authorization: Bearer <token>.")
    monitoring = family_of(request.path) == "monitoring"
    # The AI Monitoring API requires its roles for reads too (once VIGIL_AUTH_READS asks for credentials).
    if mutating or monitoring:
        needed = required_roles()
        if not principal.allowed(needed):
            raise ApiError(
                403,
                f"Role required: one of {', '.join(sorted(needed | {ADMIN}))}.",
                code="insufficient_permissions" if monitoring else "forbidden",
            )
    g.principal = principal


def actor() -> str | None:
    """Who is acting, for audit entries."""
    principal = getattr(g, "principal", None)
    return f"{principal.method}:{principal.subject}" if principal else None


def init_auth(app: Flask) -> None:
    app.before_request(enforce)

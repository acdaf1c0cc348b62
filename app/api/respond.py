"""Response helpers shared by the blueprints."""
from __future__ import annotations

from typing import Any

from flask import current_app, g, request

from app.api.auth import actor
from app.services import audit
from app.services.audit import Audit


def ok(data: Any, status: int = 200) -> tuple[dict[str, Any], int]:
    """The 000 family's success envelope."""
    return {"success": True, "data": data}, status


def settings():
    return current_app.config["VIGIL_SETTINGS"]


def audited(action: str, resource_type: str, resource_id: str | None = None,
            details: dict[str, Any] | None = None) -> None:
    """Record an audit entry for the current request's principal."""
    audit.record(action, resource_type, resource_id, actor=actor(), details=details,
                 ip_address=request.remote_addr, request_id=getattr(g, "request_id", None), settings=settings())


def who() -> Audit:
    """The current request's principal, address and request id, for audit entries a service writes
    in the same transaction as its change."""
    return Audit(actor=actor(), ip_address=request.remote_addr, request_id=getattr(g, "request_id", None))

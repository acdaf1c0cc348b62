"""Response helpers shared by the blueprints."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from flask import g, request
from sqlalchemy.exc import OperationalError

from app.api.kit.auth import actor
from app.api.kit.current import current_settings
from app.core.errors import Unavailable
from app.observability import audit
from app.observability.audit import Audit


def ok(data: Any, status: int = 200) -> tuple[dict[str, Any], int]:
    """The platform family's success envelope."""
    return {"success": True, "data": data}, status


@contextmanager
def dependencies_required() -> Iterator[None]:
    """Redis or the database down is a 503 that names it, not a 500."""
    try:
        yield
    except redis.RedisError as exc:
        raise Unavailable(f"Redis unavailable: {type(exc).__name__}") from None
    except OperationalError as exc:
        raise Unavailable(f"Database unavailable: {type(exc.orig).__name__}") from None


def audited(
    action: str, resource_type: str, resource_id: str | None = None, details: dict[str, Any] | None = None
) -> None:
    """Record an audit entry for the current request's principal."""
    audit.record(
        action,
        resource_type,
        resource_id,
        actor=actor(),
        details=details,
        ip_address=request.remote_addr,
        request_id=getattr(g, "request_id", None),
        settings=current_settings(),
    )


def who() -> Audit:
    """The current request's principal, address and request id, for audit entries a service writes
    in the same transaction as its change."""
    return Audit(actor=actor(), ip_address=request.remote_addr, request_id=getattr(g, "request_id", None))

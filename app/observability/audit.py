"""The audit trail: who changed what through the operations API (`audit_log` table)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from app.core.db import session_scope
from app.core.settings import Settings, get_settings
from app.models import AuditLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Audit:
    """Who asked for a change, for the audit entry."""

    actor: str | None = None
    ip_address: str | None = None
    request_id: str | None = None


def entry(
    action: str, resource_type: str, resource_id: str | None, who: Audit, details: dict[str, Any] | None = None
) -> AuditLog:
    """An audit row to add in the same transaction as the change it records, so a change and its
    audit entry are written together or not at all."""
    return AuditLog(
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        actor=who.actor,
        details=details,
        ip_address=who.ip_address,
        request_id=who.request_id,
    )


def record(
    action: str,
    resource_type: str,
    resource_id: str | None = None,
    *,
    actor: str | None = None,
    details: dict[str, Any] | None = None,
    ip_address: str | None = None,
    request_id: str | None = None,
    settings: Settings | None = None,
) -> None:
    """Write one audit entry. Raises if the database is unavailable: a change that cannot be
    audited should be reported, not silently unaudited."""
    with session_scope(settings or get_settings()) as session:
        session.add(
            AuditLog(
                action=action,
                resource_type=resource_type,
                resource_id=resource_id,
                actor=actor,
                details=details,
                ip_address=ip_address,
                request_id=request_id,
            )
        )

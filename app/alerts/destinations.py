"""Alert destinations: where the e-mail and webhook channels of alert rules send, changed at run time.

Which destination an alert uses, per channel: its rule's own (a row with the rule's id) when the rule
has one, else the global one. The global destinations are the stored `global` row, or, while no
operator has stored any, the environment's `VIGIL_ALERT_EMAIL_RECIPIENTS` and
`VIGIL_ALERT_WEBHOOK_URL`: the environment seeds the configuration, and the first change through the
API stores the global row (with the environment's value for any field it leaves out), after which
the environment no longer matters (DELETE /api/alerts/destinations goes back to it). Everything is
read from SQL when an alert is dispatched, so a change applies to the next alert in every worker
without a restart, and the API that warns about a rule and the worker that sends its alerts cannot
disagree.

Every change writes an `audit_log` entry in the same transaction, naming each changed field's old
and new value; a change that changes nothing writes none.

A webhook URL often carries a token (chat services put one in the path), so answers show it whole
only to a caller allowed to change it; others see its origin (`https://hooks.example.com/…`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.alerts.notifications import email_configured
from app.core.db import session_scope
from app.core.errors import NotFound, checked
from app.core.settings import Settings
from app.core.time import iso_utc
from app.models import GLOBAL_SCOPE, AlertDestination, AlertRule, utcnow
from app.observability import audit
from app.observability.audit import Audit

# Stricter than the notification payload's rules (app/jobs/enqueue.py), so a stored destination is
# always one a notification job accepts: no control characters or whitespace (of any regex dialect's
# `\s`, spelt out so that ECMA 262, Rust and Python agree), nothing a header or list could split on.
_NOT_IN = r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
EMAIL_PATTERN = rf"^[^@<>,;{_NOT_IN}]+@[^@<>,;{_NOT_IN}]+$"
# The host is a name or an IPv4 address in ASCII (optionally with a login and a port): every URL the
# pattern admits is one urllib and requests can parse (no IPv6 literal, whose brackets they validate).
WEBHOOK_URL_PATTERN = (
    r"^https?://(?:[A-Za-z0-9._~%!$&'()*+,;=:-]+@)?[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,252})"
    rf"(?::[0-9]{{1,5}})?(?:[/?#][^{_NOT_IN}]*)?$"
)
MAX_RECIPIENTS = 100

EmailAddress = Annotated[
    str, Field(min_length=3, max_length=254, pattern=EMAIL_PATTERN, description="An e-mail address")
]
WebhookUrl = Annotated[
    str, Field(max_length=2048, pattern=WEBHOOK_URL_PATTERN, description="An http(s) URL the alert's JSON is POSTed to")
]
Source = Literal["stored", "environment"]
From = Literal["rule", "global"]

PUSH_UNAVAILABLE = "push notifications are not available in Vigil"
SMTP_MISSING = "e-mail is not configured (VIGIL_SMTP_HOST is empty)"
NO_RECIPIENTS = "no alert e-mail recipients (PUT /api/alerts/destinations, or VIGIL_ALERT_EMAIL_RECIPIENTS)"
NO_WEBHOOK = "no alert webhook URL (PUT /api/alerts/destinations, or VIGIL_ALERT_WEBHOOK_URL)"
MASK = "…"


class GlobalDestinationsUpdate(BaseModel):
    """PUT /api/alerts/destinations: the fields sent replace the global ones; fields left out keep theirs."""

    model_config = ConfigDict(extra="forbid")

    email_recipients: list[EmailAddress] | None = Field(
        None, max_length=MAX_RECIPIENTS, description="Who alert e-mail goes to; `[]` or null: nobody"
    )
    webhook_url: WebhookUrl | None = Field(None, description="Where alert webhooks are POSTed; null: nowhere")


class RuleDestinationsUpdate(BaseModel):
    """PUT /api/alerts/rules/{id}/destinations: the fields sent replace the rule's own; null: the global one."""

    model_config = ConfigDict(extra="forbid")

    email_recipients: list[EmailAddress] | None = Field(
        None,
        min_length=1,
        max_length=MAX_RECIPIENTS,
        description="This rule's recipients instead of the global ones; null: the global ones",
    )
    webhook_url: WebhookUrl | None = Field(
        None, description="This rule's webhook instead of the global one; null: the global one"
    )


@dataclass(frozen=True)
class Destinations:
    email_recipients: list[str]
    webhook_url: str | None


def environment(settings: Settings) -> Destinations:
    """The seed: the global destinations while none are stored."""
    return Destinations(list(settings.alert_recipients), settings.alert_webhook_url or None)


def _unique(values: list[str] | None) -> list[str]:
    return list(dict.fromkeys(values or []))


@dataclass
class Table:
    """Every stored destination row, read once: what a list of rules needs to resolve each one."""

    settings: Settings
    global_row: AlertDestination | None
    rule_rows: dict[str, AlertDestination]

    @property
    def global_destinations(self) -> Destinations:
        row = self.global_row
        if row is None:
            return environment(self.settings)
        return Destinations(list(row.email_recipients or []), row.webhook_url)

    @property
    def source(self) -> Source:
        return "environment" if self.global_row is None else "stored"

    def for_rule(self, rule_id: str | None) -> Destinations:
        """What an alert of this rule sends to (a deleted rule's alerts: the global destinations)."""
        base = self.global_destinations
        own = self.rule_rows.get(rule_id) if rule_id else None
        if own is None:
            return base
        return Destinations(
            list(own.email_recipients) if own.email_recipients else base.email_recipients,
            own.webhook_url or base.webhook_url,
        )


def load_table(session: Session, settings: Settings, rule_id: str | None = None) -> Table:
    """The stored rows: all of them, or only the global one and `rule_id`'s (GLOBAL_SCOPE: only the global one)."""
    query = select(AlertDestination)
    if rule_id is not None:
        query = query.where(AlertDestination.scope.in_([GLOBAL_SCOPE, rule_id]))
    rows = list(session.execute(query).scalars())
    return Table(
        settings,
        next((r for r in rows if r.scope == GLOBAL_SCOPE), None),
        {r.scope: r for r in rows if r.scope != GLOBAL_SCOPE},
    )


def for_rule(session: Session, settings: Settings, rule_id: str | None) -> Destinations:
    return load_table(session, settings, rule_id or GLOBAL_SCOPE).for_rule(rule_id)


def problem(settings: Settings, destinations: Destinations, channel: str) -> str | None:
    """Why `channel` cannot carry an alert with these destinations now, or None when it can. One
    wording for a delivery recorded `unavailable`, a rule's warning and the notification config."""
    if channel == "push":
        return PUSH_UNAVAILABLE
    if channel == "email":
        if not email_configured(settings):
            return SMTP_MISSING
        return None if destinations.email_recipients else NO_RECIPIENTS
    return None if destinations.webhook_url else NO_WEBHOOK


def warnings(settings: Settings, destinations: Destinations, channels: list[str]) -> list[str]:
    """`channel: why` for each of a rule's channels that its alerts could not use now."""
    return [f"{c}: {p}" for c in channels if (p := problem(settings, destinations, c))]


def masked(url: str | None) -> str | None:
    """A URL's origin only: where it goes, without the path or query that may hold its token."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # not one the API accepts (it came from the environment): show nothing of it
        return MASK
    origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    return origin if url.rstrip("/") == origin else f"{origin}/{MASK}"


# ---- answers ------------------------------------------------------------------------------------------------
def _url(url: str | None, reveal: bool) -> str | None:
    return url if reveal else masked(url)


def _global_view(table: Table, reveal: bool) -> dict[str, Any]:
    dest, env, row = table.global_destinations, environment(table.settings), table.global_row
    return {
        "email_recipients": dest.email_recipients,
        "webhook_url": _url(dest.webhook_url, reveal),
        "source": table.source,
        "updated_at": iso_utc(row.updated_at) if row else None,
        "updated_by": row.updated_by if row else None,
        "environment": {"email_recipients": env.email_recipients, "webhook_url": _url(env.webhook_url, reveal)},
        "webhook_url_masked": not reveal,
    }


def _rule_view(table: Table, rule: AlertRule, reveal: bool) -> dict[str, Any]:
    own = table.rule_rows.get(rule.id)
    effective = table.for_rule(rule.id)
    return {
        "rule_id": rule.id,
        "rule_name": rule.name,
        "email_recipients": list(own.email_recipients) if own and own.email_recipients else None,
        "webhook_url": _url(own.webhook_url, reveal) if own and own.webhook_url else None,
        "effective": {
            "email_recipients": effective.email_recipients,
            "email_from": "rule" if own and own.email_recipients else "global",
            "webhook_url": _url(effective.webhook_url, reveal),
            "webhook_from": "rule" if own and own.webhook_url else "global",
        },
        "warnings": warnings(table.settings, effective, list(rule.channels)),
        "updated_at": iso_utc(own.updated_at) if own else None,
        "updated_by": own.updated_by if own else None,
        "webhook_url_masked": not reveal,
    }


def overview(settings: Settings, reveal: bool) -> dict[str, Any]:
    """The global destinations and every rule that has its own."""
    with session_scope(settings) as session:
        table = load_table(session, settings)
        rules = (
            session.execute(
                select(AlertRule)
                .where(AlertRule.id.in_(list(table.rule_rows)))
                .order_by(AlertRule.created_at, AlertRule.id)
            ).scalars()
            if table.rule_rows
            else []
        )
        return {"global": _global_view(table, reveal), "rules": [_rule_view(table, r, reveal) for r in rules]}


def _rule(session: Session, rule_id: str) -> AlertRule:
    rule = session.get(AlertRule, rule_id)
    if rule is None:
        raise NotFound(f"No alert rule with id '{rule_id}'", code="rule_not_found")
    return rule


def get_rule_destinations(settings: Settings, rule_id: str, reveal: bool) -> dict[str, Any]:
    with session_scope(settings) as session:
        rule = _rule(session, rule_id)
        return _rule_view(load_table(session, settings, rule_id), rule, reveal)


# ---- changes --------------------------------------------------------------------------------------------------
def _locked_row(session: Session, scope: str) -> AlertDestination | None:
    """The row, read after an UPDATE of it, so two concurrent changes queue up instead of one
    overwriting the other's field (the row lock on PostgreSQL, the write lock on SQLite)."""
    session.execute(
        update(AlertDestination)
        .where(AlertDestination.scope == scope)
        .values(updated_by=AlertDestination.updated_by)  # changes nothing: only takes the lock
        .execution_options(synchronize_session=False)
    )
    return session.get(AlertDestination, scope, populate_existing=True)


def _diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {k: {"old": before[k], "new": after[k]} for k in after if before[k] != after[k]}


def _retrying_insert(change: Any) -> Any:
    """Run `change` (one transaction); a concurrent first insert of the same row costs one retry,
    which then finds that row and updates it."""
    try:
        return change()
    except IntegrityError:
        return change()


def update_global(settings: Settings, values: GlobalDestinationsUpdate | dict[str, Any], who: Audit) -> dict[str, Any]:
    """Store the global destinations: the fields sent replace, the others keep their value (the
    environment's, the first time)."""
    body = checked(GlobalDestinationsUpdate, values)
    sent = body.model_fields_set

    def change() -> dict[str, Any]:
        with session_scope(settings) as session:
            row = _locked_row(session, GLOBAL_SCOPE)
            table = Table(settings, row, {})
            current = table.global_destinations
            before = {"email_recipients": current.email_recipients, "webhook_url": current.webhook_url}
            after = {
                "email_recipients": _unique(body.email_recipients)
                if "email_recipients" in sent
                else current.email_recipients,
                "webhook_url": body.webhook_url if "webhook_url" in sent else current.webhook_url,
            }
            diff = _diff(before, after)
            if row is not None and not diff:
                return _global_view(table, True)
            if row is None:
                row = AlertDestination(scope=GLOBAL_SCOPE, rule_id=None)
                session.add(row)
            row.email_recipients, row.webhook_url = after["email_recipients"], after["webhook_url"]
            row.updated_at, row.updated_by = utcnow(), who.actor
            session.flush()
            details: dict[str, Any] = {"changes": diff}
            if table.source == "environment":
                details["seeded_from_environment"] = True
            session.add(audit.entry("alert_destinations_updated", "alert_destinations", GLOBAL_SCOPE, who, details))
            return _global_view(Table(settings, row, {}), True)

    return _retrying_insert(change)


def reset_global(settings: Settings, who: Audit) -> dict[str, Any]:
    """Forget the stored global destinations: the environment's apply again."""
    with session_scope(settings) as session:
        row = _locked_row(session, GLOBAL_SCOPE)
        if row is not None:
            before = {"email_recipients": list(row.email_recipients or []), "webhook_url": row.webhook_url}
            session.delete(row)
            session.add(
                audit.entry("alert_destinations_reset", "alert_destinations", GLOBAL_SCOPE, who, {"removed": before})
            )
        session.flush()
        return _global_view(Table(settings, None, {}), True)


def update_rule_destinations(
    settings: Settings, rule_id: str, values: RuleDestinationsUpdate | dict[str, Any], who: Audit
) -> dict[str, Any]:
    """Set a rule's own destinations: the fields sent replace the rule's, null goes back to the global one
    (a rule left with neither has no row)."""
    body = checked(RuleDestinationsUpdate, values)
    sent = body.model_fields_set

    def change() -> dict[str, Any]:
        with session_scope(settings) as session:
            rule = _rule(session, rule_id)
            row = _locked_row(session, rule_id)
            before = {
                "email_recipients": list(row.email_recipients) if row and row.email_recipients else None,
                "webhook_url": row.webhook_url if row else None,
            }
            after = {
                "email_recipients": (_unique(body.email_recipients) or None)
                if "email_recipients" in sent
                else before["email_recipients"],
                "webhook_url": body.webhook_url if "webhook_url" in sent else before["webhook_url"],
            }
            diff = _diff(before, after)
            if diff:
                if after["email_recipients"] is None and after["webhook_url"] is None:
                    if row is not None:
                        session.delete(row)
                else:
                    if row is None:
                        row = AlertDestination(scope=rule_id, rule_id=rule_id)
                        session.add(row)
                    row.email_recipients, row.webhook_url = after["email_recipients"], after["webhook_url"]
                    row.updated_at, row.updated_by = utcnow(), who.actor
                session.flush()
                session.add(
                    audit.entry("alert_rule_destinations_updated", "alert_rule", rule_id, who, {"changes": diff})
                )
            return _rule_view(load_table(session, settings, rule_id), rule, True)

    return _retrying_insert(change)

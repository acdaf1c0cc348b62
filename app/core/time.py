"""The one way Vigil writes a time on the wire: ISO 8601 in UTC with a `Z` suffix
(`2026-12-01T20:15:00.123456Z`), which every API family's documents use and JavaScript's
`Date.parse` reads. Stored datetimes without a zone (SQLite returns them naive) are UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(value: datetime | float | str | None) -> str | None:
    """A datetime, or epoch seconds (a float, or a string as Redis stores it), as ISO 8601 UTC;
    None (or an empty string) stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    else:
        dt = datetime.fromtimestamp(float(value), tz=UTC)
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def iso_now() -> str:
    """Now, as ISO 8601 UTC."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")

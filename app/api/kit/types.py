"""Input types the handlers share, each bounded the same way in the code and in the OpenAPI document.

A bound that is enforced but not in the schema makes generated clients send requests the server
refuses; a bound in the schema that is not enforced lets through what the database then chokes on
(a 10^22 `offset` overflowed PostgreSQL's bigint). So every page offset, database id and time
parameter comes from here.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema

# Largest row offset a listing accepts: far beyond any real table, far below every integer type the
# databases and Redis use for offsets.
MAX_OFFSET = 1_000_000_000
# Ids of rows in BIGINT (and SQLite INTEGER) columns.
MAX_DB_ID = 2**63 - 1

Offset = Annotated[int, Field(ge=0, le=MAX_OFFSET, description=f"Entries to skip (0-{MAX_OFFSET})")]
DbId = Annotated[int, Field(ge=1, le=MAX_DB_ID)]

_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _timestamp(value: Any) -> Any:
    """ISO 8601 date and time; a time without an offset is UTC. Numbers are refused (pydantic would
    read them as epoch seconds, which no document promises). A valid time that falls outside the
    years 1-9999 once in UTC (year 1 at +05:00) is the first or last representable instant: these
    are bounds of time ranges, and nothing is stored beyond either end."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and _ISO_DATETIME.match(value):
        try:
            parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in "Zz" else value)
        except ValueError:
            raise ValueError("not an ISO 8601 date and time (e.g. 2025-01-31T08:00:00Z)") from None
    else:
        raise ValueError("an ISO 8601 date and time is required (e.g. 2025-01-31T08:00:00Z)")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        edge = datetime.min if parsed.year == 1 else datetime.max
        return edge.replace(tzinfo=UTC)


Timestamp = Annotated[
    datetime,
    BeforeValidator(_timestamp),
    WithJsonSchema(
        {"type": "string", "format": "date-time", "description": "ISO 8601 (RFC 3339); a time without an offset is UTC"}
    ),
]


def any_case(*values: str) -> dict[str, Any]:
    """JSON schema of a string that is one of `values` in any letter case (what `.upper()` accepts)."""
    alternatives = "|".join(
        "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in v) for v in values
    )
    return {
        "type": "string",
        "pattern": f"^(?:{alternatives})$",
        "description": f"One of {', '.join(values)} (any letter case)",
    }

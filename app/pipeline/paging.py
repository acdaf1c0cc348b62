"""Pages of the resource listings (events, detections): exact totals, newest first, offset or cursor.

An offset page costs the rows it skips (the database walks the index up to the offset, so page 2,000
is slower than page 1); a cursor page is an index range starting after the last row seen, the same
cost at any depth, and it does not shift when new rows arrive at the top while a client pages. Both
are offered: offsets for "jump to page N", cursors for walking a long history.

A cursor is `<epoch microseconds>_<id>` of the last row of the page (clients pass it back as it is;
`CURSOR_PATTERN` is its exact form), with `id` breaking ties between rows of the same time: the order
is `(time, id)`, which the composite indexes of migration 0006 hold. An `offset` given with a cursor
skips that many rows after it. `count` is exact: a `COUNT(*)` of the filtered rows, read from the
same indexes. An offset page is read as a deferred join (ids first, then the page's rows), so the
skipped rows cost index entries, not table rows (bench P15 measures both kinds of page), and an
offset past the middle of the listing is walked from its far end (the count says where that is).
The count and the page are two statements: a row written between them can shift an offset page by
one row, as with any offset paging; a cursor page never shifts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, func, literal, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.core.errors import InvalidInput
from app.models.base import UTCDateTime

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Order = Literal["desc", "asc"]
# Microseconds bounded so that every cursor of this form is a representable time (years 1653-5138).
CURSOR_PATTERN = r"^(?:-[0-9]{1,16}|[0-9]{1,17})_[0-9]{1,18}$"
_CURSOR = re.compile(CURSOR_PATTERN)


@dataclass(frozen=True)
class PageRequest:
    """What a client asked for: at most `limit` rows, after `cursor` (if any), skipping `offset`."""

    limit: int = 50
    offset: int = 0
    cursor: str | None = None
    order: Order = "desc"


@dataclass
class Page:
    count: int  # every row matching the filters, not only this page
    rows: list[Any]
    next_cursor: str | None  # None on the last page


def encode_cursor(at: datetime, row_id: int) -> str:
    micros = (at.astimezone(UTC) - EPOCH) // timedelta(microseconds=1)
    return f"{micros}_{row_id}"


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The (time, id) a cursor stands for; anything else is a 400."""
    if not _CURSOR.match(cursor):
        raise InvalidInput("Invalid cursor: pass the 'next_cursor' of a previous page as it is.", code="invalid_cursor")
    micros, _, row_id = cursor.partition("_")
    return EPOCH + timedelta(microseconds=int(micros)), int(row_id)


def after(
    time_col: InstrumentedAttribute, id_col: InstrumentedAttribute, cursor: str, order: Order
) -> ColumnElement[bool]:
    """Rows after the cursor in the listing's order, as one row-value comparison, which both SQLite
    and PostgreSQL turn into an index range on `(..., time, id)`."""
    at, row_id = decode_cursor(cursor)
    key = tuple_(time_col, id_col)
    bound = tuple_(literal(at, UTCDateTime()), literal(row_id))
    return key < bound if order == "desc" else key > bound


def fetch(
    session: Session,
    query: Select,
    where: list[ColumnElement[bool]],
    time_col: InstrumentedAttribute,
    id_col: InstrumentedAttribute,
    page: PageRequest,
) -> Page:
    """One page of `query` filtered by `where`, and the exact count. `query` selects the table's
    columns (`select(Model.__table__)`): rows read by attribute like the model's objects, without
    the ORM building an object per row, which is most of a page's cost in Python."""
    count = session.execute(select(func.count()).select_from(time_col.class_).where(*where)).scalar_one()
    conditions = list(where)
    if page.cursor:
        conditions.append(after(time_col, id_col, page.cursor, page.order))
    ordering = (time_col.desc(), id_col.desc()) if page.order == "desc" else (time_col.asc(), id_col.asc())
    if page.offset and not page.cursor and page.offset >= count:
        return Page(count, [], None)
    if page.offset:
        # Deferred join: the rows to skip are walked as ids in the index alone (PostgreSQL's index-only
        # scan; SQLite never reads a skipped row either), and only the page's rows are fetched.
        walk, skip, take = ordering, page.offset, page.limit + 1
        if not page.cursor and page.offset > count // 2:
            # Past the middle, walk from the other end: the page is the rows `count - offset - limit`
            # from the end, so row 40,000 of 50,000 skips 9,950 entries instead of 40,000. The count
            # says where the end is; the order is total (`id` breaks ties), so it is the same page.
            walk = tuple(col.desc() if page.order == "asc" else col.asc() for col in (time_col, id_col))
            skip, take = max(0, count - page.offset - page.limit), min(page.limit, count - page.offset)
        ids = select(id_col).where(*conditions).order_by(*walk).limit(take).offset(skip).scalar_subquery()
        query = query.where(id_col.in_(ids))
    else:
        query = query.where(*conditions).limit(page.limit + 1)
    rows = list(session.execute(query.order_by(*ordering)).all())
    more = len(rows) > page.limit or (page.offset > 0 and not page.cursor and page.offset + page.limit < count)
    rows = rows[: page.limit]
    last = rows[-1] if rows else None
    next_cursor = encode_cursor(getattr(last, time_col.key), getattr(last, id_col.key)) if more and last else None
    return Page(count, rows, next_cursor)

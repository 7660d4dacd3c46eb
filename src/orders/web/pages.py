"""Page cursors of `GET /orders`: opaque, keyset-based and tamper-proof.

A cursor names the last order of a page by its position in the list (created, id), so the
next page starts right after it however many orders are placed meanwhile. It is bound to the
caller and to the query's filter and carries a MAC made with the deployment's cursor key:
a changed, forged, foreign (another caller's) or stale (another filter, a former key) cursor
is refused. It never grants access to anything: every page is read for the caller only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final
from uuid import UUID

from orders.domain import OrderView
from orders.web.schemas import ListQuery, list_query_schema

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_POSITION: Final = struct.Struct(">q16s")
_MAC_BYTES: Final = 16
_VERSION: Final = b"\x01"
_FILTERS: Final = {None: b"a", True: b"c", False: b"n"}


class CursorInvalid(ValueError):
    """The cursor was not made by this deployment for this caller and query."""


@dataclass(frozen=True, slots=True)
class Pages:
    """How this deployment pages lists: the query model (with its largest page), the page
    size when none is asked for, and the cursors."""

    query: type[ListQuery]
    size: int
    cursors: PageCursors


class PageCursors:
    """Makes and reads cursors with one key (32 bytes or more of secret material)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a cursor key needs at least 32 bytes")
        self._key = key

    def _mac(self, owner: str, cancelled: bool | None, position: bytes) -> bytes:
        message = b"%s%s%s\x00%s" % (_VERSION, _FILTERS[cancelled], owner.encode(), position)
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def after(self, order: OrderView, owner: str, cancelled: bool | None) -> str:
        """The cursor of the page that follows `order`."""
        position = _POSITION.pack((order.created - _EPOCH) // _MICROSECOND, order.id.bytes)
        token = position + self._mac(owner, cancelled, position)
        return base64.urlsafe_b64encode(token).rstrip(b"=").decode()

    def read(self, cursor: str, owner: str, cancelled: bool | None) -> tuple[datetime, UUID]:
        """The (created, id) a cursor points after; CursorInvalid unless it is genuine."""
        try:
            token = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise CursorInvalid("not a cursor") from None
        if len(token) != _POSITION.size + _MAC_BYTES:
            raise CursorInvalid("not a cursor")
        position, mac = token[: _POSITION.size], token[_POSITION.size :]
        if not hmac.compare_digest(mac, self._mac(owner, cancelled, position)):
            raise CursorInvalid("not a cursor of this list")
        micros, order_id = _POSITION.unpack(position)
        try:
            return _EPOCH + micros * _MICROSECOND, UUID(bytes=order_id)
        except OverflowError:  # pragma: no cover - only a genuine cursor gets here
            raise CursorInvalid("not a cursor") from None


def make_pages(size: int, max_size: int, secret: bytes) -> Pages:
    """Pages of `size` orders unless asked for up to `max_size`, their cursors signed with
    a key derived from `secret` for this purpose alone."""
    key = hmac.new(secret, b"orders page cursors v1", hashlib.sha256).digest()
    return Pages(list_query_schema(max_size), size, PageCursors(key))


def next_link(path: str, cursor: str, *, limit: int | None, cancelled: bool | None) -> str:
    """The `Link` header value (RFC 8288) of the next page."""
    query = []
    if cancelled is not None:
        query.append(f"cancelled={'true' if cancelled else 'false'}")
    if limit is not None:
        query.append(f"limit={limit}")
    # Cursors are base64url: nothing in them needs escaping in a query or a Link target.
    query.append(f"after={cursor}")
    return f'<{path}?{"&".join(query)}>; rel="next"'

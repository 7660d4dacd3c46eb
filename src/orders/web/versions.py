"""Entity tags of single orders (RFC 9110 §8.8.3) and the conditional headers that use them.

An order's tag is its version, which grows with every change, and a prefix of its id, so
that tags of two orders never match: `"v3-1f0c2a9e"`. Clients must treat it as opaque.
"""

from __future__ import annotations

from typing import Final
from uuid import UUID

from orders.domain import OrderView

_ANY: Final = "*"


def etag(order: OrderView) -> str:
    """The strong entity tag of the order as it is now."""
    return f'"v{order.version}-{order.id.hex[:8]}"'


def _tags(header: str) -> list[str]:
    # Entity tags never contain commas (RFC 9110 etagc excludes them), so a split is exact.
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def none_match(header: str | None, current: str) -> bool:
    """Whether `If-None-Match` lets a GET through (False: answer 304). Weak comparison."""
    if header is None:
        return True
    return not any(tag == _ANY or tag.removeprefix("W/") == current for tag in _tags(header))


def matching_versions(header: str | None, order_id: UUID) -> frozenset[int] | None:
    """The versions of the order that `If-Match` accepts: None when any will do (no header,
    or `*`), else those its strong tags name (possibly none, which fails every change)."""
    if header is None:
        return None
    versions = set()
    suffix = f'-{order_id.hex[:8]}"'
    for tag in _tags(header):
        if tag == _ANY:
            return None
        # Weak tags never match under the strong comparison If-Match uses.
        if tag.startswith('"v') and tag.endswith(suffix):
            number = tag[2 : -len(suffix)]
            if number.isascii() and number.isdigit() and len(number) < 10:
                versions.add(int(number))
    return frozenset(versions)

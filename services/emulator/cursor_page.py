"""OpenAI-style cursor pages (``limit``, ``after``, ``order``) over in-memory lists of objects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .common import BadRequest


def page(
    items: list[dict[str, Any]], params: Mapping[str, str], *, default_limit: int, max_limit: int
) -> dict[str, Any]:
    """An OpenAI cursor page of ``items`` (newest first): ``limit``, ``after``, ``order``."""
    try:
        limit = int(params.get("limit", default_limit))
    except ValueError:
        raise BadRequest("Invalid 'limit': expected an integer.", param="limit") from None
    if not 0 <= limit <= max_limit:
        raise BadRequest(f"Invalid 'limit': expected 0..{max_limit}.", param="limit")
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest("Invalid 'order': expected 'asc' or 'desc'.", param="order")
    if order == "asc":
        items = items[::-1]
    after = params.get("after")
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    data = items[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(items) > limit,
    }

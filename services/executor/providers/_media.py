"""Media in content parts, as adapters see them: the executor has filled every ``MediaRef``'s
``data`` (base64) before an adapter maps the request."""

from __future__ import annotations

import base64
from typing import Any

from services.contracts.events import MediaRef


def part_media(part: dict[str, Any]) -> MediaRef | None:
    """The resolved media of a content part, if the media-store resolved one."""
    raw = part.get("media")
    return MediaRef.model_validate(raw) if isinstance(raw, dict) else None


def media_bytes(ref: MediaRef) -> bytes:
    if ref.data is None:
        raise RuntimeError(f"media {ref.media_id} reached an adapter without its bytes")
    return base64.b64decode(ref.data)

"""The claim check of Realtime frames (README "Realtime"): a Realtime event whose JSON text is
larger than the inline limit (``media.inline_max_bytes``) travels as an object in FileStorage,
the frame naming it (``RealtimeFrame.data_ref``) instead of carrying it (``data``), in either
direction. Objects are under the session tenant's prefix
(``tenants/<t>/realtime/<session>/<in|out>-<seq>.json``); a reader takes only its session's
tenant's. Objects are not deleted here: the media bucket's lifecycle rules expire them.
"""

from __future__ import annotations

from typing import Literal

from services.contracts.errors import MediaNotFound
from services.contracts.events import MediaRef

from .media.refs import tenant_prefix
from .media.storage import FileStorage

MIME = "application/json"


def claim_key(tenant_id: str, session_id: str, direction: Literal["in", "out"], seq: int) -> str:
    return f"{tenant_prefix(tenant_id)}realtime/{session_id}/{direction}-{seq}.json"


async def check_in(
    data: str,
    *,
    storage: FileStorage | None,
    limit: int,
    tenant_id: str,
    session_id: str,
    direction: Literal["in", "out"],
    seq: int,
) -> tuple[str | None, MediaRef | None]:
    """``(data, None)`` when ``data`` fits the inline limit (or there is no storage to put it
    in), else ``(None, the reference)`` once the object is written."""
    if storage is None or len(data) <= limit // 4:  # UTF-8: at most 4 bytes a character
        return data, None
    body = data.encode()
    if len(body) <= limit:
        return data, None
    key = claim_key(tenant_id, session_id, direction, seq)
    await storage.put(key, body, MIME)
    return None, MediaRef(
        media_id=f"{session_id}-{direction}-{seq}", mime_type=MIME, bytes=len(body), key=key
    )


async def redeem(ref: MediaRef, *, storage: FileStorage | None, tenant_id: str) -> str:
    """The event text a frame's ``data_ref`` names; ``MediaNotFound`` for a reference outside the
    session tenant's prefix (never read) or when there is no storage to read it from."""
    if storage is None or ref.key is None or not ref.key.startswith(tenant_prefix(tenant_id)):
        raise MediaNotFound("a realtime frame names an object that is not its session's")
    return (await storage.get(ref.key)).decode()

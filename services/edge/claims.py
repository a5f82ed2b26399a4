"""The claim check at the edge: a chat body's ``data:`` URLs above ``media.inline_max_bytes`` are
written to the media bucket before the request event is, and the event names them by media id.

An event never carries media bytes above the inline limit (README "Media"): the caller's bytes
go to ``tenants/<tenant>/media/<media id>`` as they came (unchecked: the media-store reads them
back, checks them and answers a refusal as for any other reference), and the part names the
object instead (``image_url.url``, ``video_url.url``, ``file.file_id``, ``input_audio.url``).
Parts whose base64 does not decode are left as they are, for the media-store to refuse.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import TYPE_CHECKING, Any

from services.contracts.errors import GatewayError
from services.runtime.media.refs import decode_data_url, media_key, new_media_id
from services.runtime.media.storage import FileStorage

if TYPE_CHECKING:
    from .asgi import Request
    from .context import Edge

#: Where each part type keeps a data URL, and where the reference goes instead.
_URL_FIELDS = {"image_url": ("url", "url"), "video_url": ("url", "url"), "file": ("file_data", "file_id")}


def _large(value: Any, limit: int) -> bool:
    return isinstance(value, str) and len(value) * 3 // 4 > limit


async def claim_check(
    storage: FileStorage | None, tenant: str, messages: list[dict[str, Any]], inline_max: int
) -> list[dict[str, Any]]:
    """``messages`` with every large inline media stored and referenced (the same list when none is)."""
    found: list[tuple[int, int, dict[str, Any]]] = []
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            for j, part in enumerate(content):
                if isinstance(part, dict) and _holds_large(part, inline_max):
                    found.append((i, j, part))
    if not found or storage is None:
        return messages
    stored = await asyncio.gather(*(_store(storage, tenant, part) for _, _, part in found))
    out = list(messages)
    for (i, j, _), part in zip(found, stored, strict=True):
        if out[i] is messages[i]:
            out[i] = {**messages[i], "content": list(messages[i]["content"])}
        out[i]["content"][j] = part
    return out


def _holds_large(part: dict[str, Any], limit: int) -> bool:
    kind = part.get("type")
    body = part.get(kind) if isinstance(kind, str) else None
    if not isinstance(body, dict):
        return False
    if kind == "input_audio":
        return _large(body.get("data"), limit)
    field = _URL_FIELDS.get(str(kind))
    value = body.get(field[0]) if field else None
    return _large(value, limit) and isinstance(value, str) and value.startswith("data:")


async def _store(storage: FileStorage, tenant: str, part: dict[str, Any]) -> dict[str, Any]:
    kind = str(part["type"])
    body = dict(part[kind])
    try:
        if kind == "input_audio":
            mime, raw = "application/octet-stream", base64.b64decode(body["data"], validate=True)
        else:
            declared, raw = decode_data_url(body[_URL_FIELDS[kind][0]])
            mime = declared or "application/octet-stream"
    except (GatewayError, binascii.Error, ValueError):
        return part  # not decodable: the media-store refuses it, naming the part
    media_id = new_media_id()
    await storage.put(media_key(tenant, media_id), raw, mime, filename=body.get("filename"))
    if kind == "input_audio":
        body.pop("data")
        body["url"] = media_id
    else:
        src, dst = _URL_FIELDS[kind]
        body.pop(src)
        body[dst] = media_id
    return {**part, kind: body}


async def claimed(edge: Edge, req: Request, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``claim_check`` for the authenticated caller of ``req``."""
    assert req.caller is not None
    return await claim_check(edge.storage, req.caller.tenant_id, messages, edge.config.media.inline_max_bytes)

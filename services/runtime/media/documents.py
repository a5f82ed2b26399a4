"""PDF text for models that cannot read documents (aliases with ``documents: extract``).

:func:`extract_text` reads a PDF's text with pypdf, page by page, each page under a
``[page N]`` line, pages apart by a blank line. :func:`as_text_parts` applies it to a chat
request: every PDF ``file`` part becomes a text part (the file's name on the first line, then
its text), so any provider that reads text can answer about the document.

Extraction is CPU work on untrusted bytes: callers on an event loop run it in a thread
(``asyncio.to_thread``). Only text is kept (no images, no layout); a scanned PDF without a
text layer gives its page markers and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Sequence
from typing import Any

import pypdf

from services.contracts.errors import ValidationError
from services.contracts.events import Message

PDF = "application/pdf"
DEFAULT_MAX_CHARS = 200_000
#: Ends a text cut at ``max_chars``.
TRUNCATED = "\n[truncated]"
_DATA_PDF = "data:application/pdf;"


def extract_text(pdf: bytes, *, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The text of ``pdf``: ``"[page 1]\\n<text>\\n\\n[page 2]\\n<text>..."``, at most
    ``max_chars`` characters (a longer text is cut and ends with ``TRUNCATED``; pages past
    the cut are not read). A PDF without pages gives ``""``.

    ``ValidationError`` when the bytes are not a PDF pypdf can read, or the PDF is encrypted
    (one that opens with the empty password is read)."""
    reader = _reader(pdf)
    out: list[str] = []
    size = 0
    try:
        for number, page in enumerate(reader.pages, 1):
            text = f"[page {number}]\n{page.extract_text().strip()}"
            out.append(text)
            size += len(text) + 2
            if size > max_chars:
                break
    except Exception as exc:  # a hostile or broken file can make pypdf raise anything
        raise ValidationError(f"the PDF cannot be read: {exc}", param="messages") from exc
    return _cut("\n\n".join(out), max_chars)


def _reader(pdf: bytes) -> pypdf.PdfReader:
    if not pdf.startswith(b"%PDF-"):
        raise ValidationError("the document is not a PDF (no %PDF- header)", param="messages")
    try:
        reader = pypdf.PdfReader(io.BytesIO(pdf))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ValidationError(
                "the PDF is encrypted (password protected); send it decrypted", param="messages"
            )
    except ValidationError:
        raise
    except Exception as exc:  # pypdf raises more than its own errors on malformed files
        raise ValidationError(f"the PDF cannot be read: {exc}", param="messages") from exc
    return reader


def _cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    if max_chars <= len(TRUNCATED):
        return text[:max_chars]
    return text[: max_chars - len(TRUNCATED)] + TRUNCATED


def is_pdf_part(part: dict[str, Any]) -> bool:
    """A ``file`` content part holding a PDF (resolved media, or an inline ``data:`` URL)."""
    if part.get("type") != "file":
        return False
    media = part.get("media")
    if isinstance(media, dict):
        return media.get("mime_type") == PDF
    file = part.get("file")
    data = file.get("file_data") if isinstance(file, dict) else None
    return isinstance(data, str) and data.startswith(_DATA_PDF)


def _pdf_bytes(part: dict[str, Any]) -> bytes:
    media = part.get("media")
    if isinstance(media, dict):
        data = media.get("data")
        if not isinstance(data, str):
            raise RuntimeError(f"media {media.get('media_id')} reached text extraction without its bytes")
    else:
        data = part["file"]["file_data"].partition(",")[2]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError("the PDF's base64 data is malformed", param="messages") from exc


def _name(part: dict[str, Any]) -> str:
    file, media = part.get("file"), part.get("media")
    for source in (file, media):
        name = source.get("filename") if isinstance(source, dict) else None
        if isinstance(name, str) and name:
            return name
    return "document.pdf"


def as_text_parts(messages: Sequence[Message], *, max_chars: int = DEFAULT_MAX_CHARS) -> list[Message]:
    """``messages`` with every PDF ``file`` part replaced by ``{"type": "text", "text":
    "<filename>\\n<extracted text>"}`` (``max_chars`` per document). Messages without a PDF
    are returned as they are (the same objects); the others are copies. An unreadable PDF is a
    ``ValidationError`` naming the file. CPU-bound: run it off the event loop for large PDFs."""
    out: list[Message] = []
    for m in messages:
        if isinstance(m.content, list) and any(is_pdf_part(p) for p in m.content):
            content = [_as_text(p, max_chars) if is_pdf_part(p) else p for p in m.content]
            m = m.model_copy(update={"content": content})
        out.append(m)
    return out


def _as_text(part: dict[str, Any], max_chars: int) -> dict[str, Any]:
    name = _name(part)
    try:
        text = extract_text(_pdf_bytes(part), max_chars=max_chars)
    except ValidationError as exc:
        raise ValidationError(f"{name}: {exc.message}", param=exc.param) from exc
    return {"type": "text", "text": f"{name}\n{text}"}

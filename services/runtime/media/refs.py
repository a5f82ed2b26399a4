"""Media ids, object keys, and the references a caller may give for media.

Every stored object lives under its tenant's prefix (``tenants/<tenant>/``): ``media/<med_…>``
(resolved and generated media), ``files/<file-…>`` (the Files API), ``staging/<med_…>`` (the
executor's claim checks). A reference is one of:

* ``data:<mime>[;base64],<payload>`` — the bytes themselves;
* ``s3://<bucket>/<key>`` — an object of the gateway's media bucket;
* ``file-<id>`` / ``med_<id>`` — a file or media id of the caller's tenant;
* ``http(s)://…`` — fetched only through ``fetch.SafeFetcher``.

:func:`owned_key` is the one tenant check: a stored reference names an object key only when the
object is the caller's tenant's, and any other reference is :class:`MediaNotFound` (not told apart
from a missing object, so keys of other tenants cannot be probed). :func:`redact_url` is how a
reference appears in errors, logs and events: no credentials, no query string (presigned URLs carry
their signature there), no payload.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote_to_bytes, urlsplit, urlunsplit

from services.contracts.errors import MediaNotFound, ValidationError

ReferenceKind = Literal["data", "s3", "file", "media", "http"]

#: File and media ids: a prefix and 1-64 letters or digits (ours are 32 hex digits), so an id can
#: never carry a ``/`` or ``..`` into a key.
_FILE_ID = re.compile(r"file-[A-Za-z0-9]{1,64}")
_MEDIA_ID = re.compile(r"med_[A-Za-z0-9]{1,64}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")
#: The longest reference shown whole in a message when it is not a URL.
_SHOWN = 80


def new_media_id() -> str:
    """A fresh media id: ``med_`` and 32 hex digits."""
    return "med_" + secrets.token_hex(16)


def new_file_id() -> str:
    """A fresh file id, OpenAI-style: ``file-`` and 32 hex digits."""
    return "file-" + secrets.token_hex(16)


def tenant_prefix(tenant: str) -> str:
    """The key prefix every object of ``tenant`` has (the tenant id percent-encoded, ``/`` too)."""
    return f"tenants/{quote(tenant, safe='')}/"


def media_key(tenant: str, media_id: str) -> str:
    return tenant_prefix(tenant) + "media/" + media_id


def file_key(tenant: str, file_id: str) -> str:
    return tenant_prefix(tenant) + "files/" + file_id


def staging_key(tenant: str, media_id: str) -> str:
    return tenant_prefix(tenant) + "staging/" + media_id


@dataclass(frozen=True)
class Reference:
    """A parsed media reference: ``url`` as given; ``bucket``/``key`` for ``s3``; ``id`` for
    ``file`` and ``media``."""

    kind: ReferenceKind
    url: str
    bucket: str | None = None
    key: str | None = None
    id: str | None = None


def parse_reference(url: str) -> Reference:
    """The kind of reference ``url`` is. ``ValidationError`` (naming the redacted reference) for
    anything that is none of the five kinds, or is one of them malformed."""
    if not isinstance(url, str) or not url:
        raise ValidationError("an empty media reference")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        if "," not in url:
            raise _invalid(url, "a data: URL needs a ',' before its payload")
        return Reference("data", url)
    if scheme == "s3":
        bucket, slash, key = url[len("s3:") :].removeprefix("//").partition("/")
        if not url[3:5] == "//" or not _BUCKET.fullmatch(bucket) or not slash or not key:
            raise _invalid(url, "an s3:// reference is s3://<bucket>/<key>")
        return Reference("s3", url, bucket=bucket, key=key)
    if scheme in ("http", "https"):
        try:
            parts = urlsplit(url)
            host, _ = parts.hostname, parts.port
        except ValueError as exc:
            raise _invalid(url, f"not a valid URL ({exc})") from exc
        if not host:
            raise _invalid(url, "the URL has no host")
        return Reference("http", url)
    if _FILE_ID.fullmatch(url):
        return Reference("file", url, id=url)
    if _MEDIA_ID.fullmatch(url):
        return Reference("media", url, id=url)
    raise _invalid(url, "expected a data:, s3:// or http(s):// URL, a file id (file-…) or a media id (med_…)")


def _invalid(url: str, reason: str) -> ValidationError:
    shown = redact_url(url)
    return ValidationError(f"media reference {shown}: {reason}", details={"url": shown})


def decode_data_url(url: str) -> tuple[str | None, bytes]:
    """The declared type (lower case, without parameters; None when the URL declares none) and the
    bytes of a ``data:`` URL, base64 or percent-encoded. ``ValidationError`` when malformed."""
    if url[:5].lower() != "data:" or "," not in url:
        raise _invalid(url, "not a data: URL")
    header, payload = url[5:].split(",", 1)
    params = [p.strip() for p in header.split(";")]
    mime = params[0].lower() or None
    if mime is not None and not re.fullmatch(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+", mime):
        raise _invalid(url, f"{mime[:_SHOWN]!r} is not a media type")
    if any(p.lower() == "base64" for p in params[1:]):
        try:
            body = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):  # percent-encoded or line-wrapped, or malformed
            compact = re.sub(r"\s+", "", unquote_to_bytes(payload).decode("latin-1"))
            try:
                body = base64.b64decode(compact, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise _invalid(url, "the base64 payload is malformed") from exc
    else:
        body = unquote_to_bytes(payload)
    return mime, body


def owned_key(tenant: str, ref: Reference, bucket: str) -> str:
    """The object key ``ref`` names, only if that object is ``tenant``'s: an ``s3://`` reference in
    ``bucket`` under ``tenant_prefix(tenant)`` (no empty, ``.`` or ``..`` segment), a file id's
    ``file_key``, a media id's ``media_key``. ``MediaNotFound`` for anything else."""
    if ref.kind == "file" and ref.id is not None and _FILE_ID.fullmatch(ref.id):
        return file_key(tenant, ref.id)
    if ref.kind == "media" and ref.id is not None and _MEDIA_ID.fullmatch(ref.id):
        return media_key(tenant, ref.id)
    if ref.kind == "s3" and ref.bucket == bucket and ref.key is not None:
        prefix = tenant_prefix(tenant)
        rest = ref.key[len(prefix) :]
        if ref.key.startswith(prefix) and rest and _plain_segments(rest):
            return ref.key
    raise MediaNotFound(f"media {redact_url(ref.url)} not found", details={"url": redact_url(ref.url)})


def _plain_segments(path: str) -> bool:
    return all(s not in ("", ".", "..") for s in path.split("/")) and not any(
        c < " " or c in "\\\x7f" for c in path
    )


def redact_url(url: str) -> str:
    """``url`` fit to show: userinfo dropped, a query string as ``?<redacted>``, no fragment;
    ``data:`` URLs as ``data:<mime>;base64,<N bytes>``; anything else not a URL cut at 80
    characters."""
    if url[:5].lower() == "data:":
        header, _, payload = url[5:].partition(",")
        mime = header.split(";", 1)[0].strip()[:_SHOWN] or "text/plain"
        size = (
            len(payload) * 3 // 4 - payload[-2:].count("=") if ";base64" in header.lower() else len(payload)
        )
        return f"data:{mime};base64,<{max(size, 0)} bytes>"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return _plain(url)
    if not parts.scheme or not parts.netloc:
        return _plain(url)
    netloc = (f"[{host}]" if host and ":" in host else host or "") + (f":{port}" if port is not None else "")
    query = "<redacted>" if parts.query or "?" in url.split("#", 1)[0] else ""
    shown = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return shown + ("?" + query if query else "")


def _plain(text: str) -> str:
    """``text`` (not a URL urllib can split) without userinfo, query string and fragment, cut."""
    stem = _USERINFO.sub(r"\1", text.split("#", 1)[0])
    return _cut(stem.split("?", 1)[0]) + ("?<redacted>" if "?" in stem else "")


def _cut(text: str) -> str:
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"

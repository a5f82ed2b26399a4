"""Media too big to go inline, uploaded through the Gemini Files API (the resumable protocol the
``google-genai`` SDK uses), so a request can name it as ``fileData``.

One upload is two POSTs through the adapter's ``HttpTransport``: ``start`` (JSON metadata; the
answer's ``X-Goog-Upload-URL`` header, read through ``stream_lines``, which shows headers) and
one ``upload, finalize`` carrying every byte (``post_json`` sends any body). As the SDK does, the
upload URL's scheme and host are replaced by the deployment's, so the key only ever goes to the
configured provider. The finalize answer's ``file`` is ready when its ``state`` is ``ACTIVE``.
A ``PROCESSING`` file (videos, on the real API) is polled with ``GET`` until ready, which needs
a transport that can also ``get`` (:class:`GetsJSON`; the gateway's own cannot yet): otherwise
it is a ``ProviderError`` naming the file. Uploaded files are not deleted: Gemini drops them
after 48 hours.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import orjson

from services.contracts.errors import ProviderError, ProviderTimeout
from services.contracts.events import MediaRef

from . import _media
from ._http import error_message, is_success, malformed
from .base import map_http_errors, upstream_error
from .transport import HttpTransport

API_VERSION = "v1beta"
#: How long a PROCESSING file may take to become ACTIVE.
READY_TIMEOUT_S = 300.0
#: The first wait between two polls of a PROCESSING file (then doubled, at most 5 s).
POLL_INTERVAL_S = 0.5


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """A file the provider holds: what ``fileData`` names."""

    name: str
    uri: str
    mime_type: str


@runtime_checkable
class GetsJSON(Protocol):
    """A transport that can also GET (to poll a file the provider is still processing)."""

    async def get(
        self, url: str, headers: Mapping[str, str], timeout_s: float | None
    ) -> tuple[int, bytes]: ...


def _same_origin(url: str, base_url: str) -> str:
    """``url`` on ``base_url``'s scheme and host (path and query kept)."""
    parts, base = urlsplit(url), urlsplit(base_url)
    return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))


async def upload(
    http: HttpTransport,
    provider: str,
    base_url: str,
    auth: Mapping[str, str],
    ref: MediaRef,
    *,
    poll_interval_s: float = POLL_INTERVAL_S,
) -> UploadedFile:
    """Upload ``ref``'s bytes; the file once the provider has it ready."""
    data = _media.media_bytes(ref)
    base = base_url.rstrip("/")
    start = {
        **auth,
        "content-type": "application/json",
        "x-goog-upload-protocol": "resumable",
        "x-goog-upload-command": "start",
        "x-goog-upload-header-content-length": str(len(data)),
        "x-goog-upload-header-content-type": ref.mime_type,
    }
    meta = {"file": {"displayName": ref.filename or ref.media_id, "mimeType": ref.mime_type}}
    with map_http_errors(provider):
        async with http.stream_lines(
            f"{base}/upload/{API_VERSION}/files", start, orjson.dumps(meta), None
        ) as reply:
            raw = await reply.read()
            if not is_success(reply.status):
                raise upstream_error(provider, reply.status, error_message(raw))
            upload_url = reply.headers.get("x-goog-upload-url")
        if not upload_url:
            raise malformed(provider, "upload start answered without X-Goog-Upload-URL", raw)
        sent = {
            **auth,
            "content-type": ref.mime_type,
            "x-goog-upload-command": "upload, finalize",
            "x-goog-upload-offset": "0",
        }
        status, raw = await http.post_json(_same_origin(upload_url, base), sent, data, None)
    if not is_success(status):
        raise upstream_error(provider, status, error_message(raw))
    file = _file(provider, raw, "file")
    if file.get("state") == "PROCESSING":
        file = await _ready(http, provider, base, auth, file, poll_interval_s)
    return _uploaded(provider, file, ref)


def _file(provider: str, raw: bytes, key: str | None) -> dict[str, Any]:
    """The ``File`` of an answer (under ``key``, or the whole body)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise malformed(provider, "file answer is not JSON", raw) from exc
    file = body.get(key) if isinstance(body, dict) and key else body
    if (
        not isinstance(file, dict)
        or not isinstance(file.get("name"), str)
        or not isinstance(file.get("uri"), str)
    ):
        raise malformed(provider, "file answer has no file name and uri", raw)
    if file.get("state") == "FAILED":
        reason = (file.get("error") or {}).get("message") or "no reason given"
        raise ProviderError(
            f"{provider}: the Files API could not process {file['name']}: {reason}",
            details={"upstream_status": None},
        )
    return file


def _uploaded(provider: str, file: dict[str, Any], ref: MediaRef) -> UploadedFile:
    mime = file.get("mimeType")
    return UploadedFile(
        name=file["name"], uri=file["uri"], mime_type=mime if isinstance(mime, str) else ref.mime_type
    )


async def _ready(
    http: HttpTransport,
    provider: str,
    base: str,
    auth: Mapping[str, str],
    file: dict[str, Any],
    interval_s: float,
) -> dict[str, Any]:
    """Poll a PROCESSING file until it is ACTIVE (``FAILED``: ProviderError; too long: ProviderTimeout)."""
    name = file["name"]
    if not isinstance(http, GetsJSON):
        raise ProviderError(
            f"{provider}: uploaded file {name} is still PROCESSING and this transport cannot poll it",
            details={"upstream_status": None},
        )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while file.get("state") == "PROCESSING":
        if time.monotonic() > deadline:
            raise ProviderTimeout(
                f"{provider}: uploaded file {name} was not ready within {READY_TIMEOUT_S:g} s"
            )
        await asyncio.sleep(interval_s)
        interval_s = min(max(interval_s * 2, 0.0), 5.0)
        with map_http_errors(provider):
            status, raw = await http.get(f"{base}/{API_VERSION}/{name}", auth, None)
        if not is_success(status):
            raise upstream_error(provider, status, error_message(raw))
        file = _file(provider, raw, None)
    return file

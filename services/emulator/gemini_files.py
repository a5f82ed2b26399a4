"""Gemini Files API, emulated: resumable uploads as the ``google-genai`` SDK makes them, and
``GET`` / ``DELETE`` / list of the files they made.

An upload is two or more ``POST /upload/v1beta/files`` calls (the real protocol):

* **start**: ``X-Goog-Upload-Protocol: resumable``, ``X-Goog-Upload-Command: start``, optional
  ``X-Goog-Upload-Header-Content-Length`` / ``-Content-Type``, a JSON body ``{"file":
  {"mimeType", "displayName", "name"}}`` (all optional; a mime type is needed from the body or
  the header). Answered ``200`` with an empty body and ``X-Goog-Upload-URL`` (this path with
  ``?upload_id=...``), ``X-Goog-Upload-Status: active``;
* **upload** to that URL: ``X-Goog-Upload-Command: upload`` (more to come: ``active``) or
  ``upload, finalize`` (the last bytes: ``final``), ``X-Goog-Upload-Offset`` = the bytes sent
  so far (another offset is a 400), the bytes as the body. Finalizing answers ``{"file":
  File}``; ``query`` answers the status and ``X-Goog-Upload-Size-Received``; ``cancel`` drops
  the session.

A ``File`` is ``{"name": "files/<id>", "displayName"?, "mimeType", "sizeBytes" (a string, as
int64s are in JSON), "createTime", "updateTime", "expirationTime" (48 h later), "sha256Hash",
"uri": "<this server>/v1beta/files/<id>", "state": "ACTIVE", "source": "UPLOADED"}``. Only
what a file is (size, type, hash) is kept, never its bytes, so big uploads cost no memory; the
newest :data:`FILES_KEPT` files and :data:`UPLOADS_KEPT` open sessions are kept per app.
Served under ``v1beta`` and ``v1`` alike. ``GET /v1beta/files/{id}`` answers the ``File``, ``DELETE`` forgets it, ``GET /v1beta/files``
lists them (``{"files": [...]}``, newest first). A file that is not there is ``403
PERMISSION_DENIED``, as the real API answers.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .common import BadRequest, json_response

#: The API versions served (the SDK's default is ``v1``; the gateway's adapter uses ``v1beta``).
VERSIONS = ("v1beta", "v1")
FILES_KEPT = 1000
UPLOADS_KEPT = 100
LIFETIME = timedelta(hours=48)
#: What the real API says about a file it does not have (or that is not the caller's).
NOT_THERE = "You do not have permission to access the File {id} or it may not exist."


class ApiError(Exception):
    """An answer in Google's error shape (``{"error": {"code", "message", "status"}}``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def status_name(status: int) -> str:
    return _STATUS.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")


def error(
    status: int, message: str, headers: dict[str, str] | None = None, details: list[Any] | None = None
) -> Response:
    """A Google API error response."""
    err: dict[str, Any] = {"code": status, "message": message, "status": status_name(status)}
    if details:
        err["details"] = details
    return json_response({"error": err}, status, headers)


@dataclass
class StoredFile:
    """What the emulator keeps of an uploaded file."""

    id: str
    mime_type: str
    size: int
    sha256: str
    uri: str
    created: datetime
    display_name: str | None = None

    @property
    def name(self) -> str:
        return f"files/{self.id}"

    def resource(self) -> dict[str, Any]:
        """The ``File`` resource."""
        stamp = _rfc3339(self.created)
        out: dict[str, Any] = {"name": self.name}
        if self.display_name:
            out["displayName"] = self.display_name
        out |= {
            "mimeType": self.mime_type,
            "sizeBytes": str(self.size),
            "createTime": stamp,
            "updateTime": stamp,
            "expirationTime": _rfc3339(self.created + LIFETIME),
            "sha256Hash": base64.b64encode(self.sha256.encode()).decode(),
            "uri": self.uri,
            "state": "ACTIVE",
            "source": "UPLOADED",
        }
        return out


@dataclass
class Upload:
    """An open resumable upload session."""

    id: str
    mime_type: str
    declared: int | None
    display_name: str | None
    uri: str
    received: int = 0
    digest: Any = field(default_factory=hashlib.sha256)


class FileStore:
    """One app's files and upload sessions (the oldest go first past the caps)."""

    def __init__(self) -> None:
        self.files: OrderedDict[str, StoredFile] = OrderedDict()
        self.uploads: OrderedDict[str, Upload] = OrderedDict()

    def add(self, stored: StoredFile) -> None:
        self.files[stored.id] = stored
        while len(self.files) > FILES_KEPT:
            self.files.popitem(last=False)

    def open(self, upload: Upload) -> None:
        self.uploads[upload.id] = upload
        while len(self.uploads) > UPLOADS_KEPT:
            self.uploads.popitem(last=False)


def store(request: Request) -> FileStore:
    """The app's file store (made on first use, so a fresh app has none)."""
    state = request.app.state
    found = getattr(state, "gemini_files", None)
    if not isinstance(found, FileStore):
        found = state.gemini_files = FileStore()
    return found


_FILE_URI = re.compile(r"(?:https?://[^/?#]+/v1(?:beta)?/)?files/([a-z0-9-]+)")


def file_id_of(uri: str) -> str | None:
    """The id in a file's name or URI (``files/abc``, ``https://host/v1beta/files/abc``), else None."""
    match = _FILE_URI.fullmatch(uri)
    return match.group(1) if match else None


def lookup(request: Request, uri: str) -> StoredFile | None:
    """The uploaded file a ``fileData.fileUri`` names, if this emulator has it."""
    file_id = file_id_of(uri)
    return store(request).files.get(file_id) if file_id else None


def _rfc3339(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _new_id() -> str:
    return os.urandom(6).hex()


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _version(request: Request) -> str:
    """The API version of the path the request came on."""
    path = request.url.path
    return next((v for v in VERSIONS if f"/{v}/" in path), VERSIONS[0])


# --- upload ---------------------------------------------------------------------------------------


async def upload(request: Request) -> Response:
    try:
        upload_id = request.query_params.get("upload_id")
        if upload_id is None:
            return await _start(request)
        return await _transfer(request, upload_id)
    except ApiError as exc:
        return error(exc.status, exc.message)
    except BadRequest as exc:
        return error(400, exc.message)


async def _start(request: Request) -> Response:
    protocol = request.headers.get("x-goog-upload-protocol", "")
    command = request.headers.get("x-goog-upload-command", "")
    if protocol.lower() != "resumable" or command.lower() != "start":
        raise BadRequest(
            "Uploads take X-Goog-Upload-Protocol: resumable with X-Goog-Upload-Command: start "
            "(the emulator does not speak the multipart or media protocols)."
        )
    raw = await request.body()
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Invalid JSON payload received. {exc}") from None
    spec = body.get("file") if isinstance(body, dict) else None
    spec = spec if isinstance(spec, dict) else {}
    mime = (
        spec.get("mimeType")
        or spec.get("mime_type")
        or request.headers.get("x-goog-upload-header-content-type")
    )
    if not isinstance(mime, str) or not mime:
        raise BadRequest("Upload has no mime type: set file.mimeType or X-Goog-Upload-Header-Content-Type.")
    declared = request.headers.get("x-goog-upload-header-content-length")
    size: int | None = None
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(f"Invalid X-Goog-Upload-Header-Content-Length: {declared!r}.")
        size = int(declared)
    files = store(request)
    file_id = _requested_id(spec.get("name"), files) or _new_id()
    display = spec.get("displayName") or spec.get("display_name")
    session = Upload(
        id=_new_id() + _new_id(),
        mime_type=mime,
        declared=size,
        display_name=display if isinstance(display, str) else None,
        uri=f"{_base(request)}/{_version(request)}/files/{file_id}",
    )
    files.open(session)
    url = f"{_base(request)}{request.url.path}?upload_id={session.id}&upload_protocol=resumable"
    headers = {
        "x-goog-upload-url": url,
        "x-goog-upload-status": "active",
        "x-goog-upload-chunk-granularity": str(8 * 1024 * 1024),
        "x-goog-upload-control-url": url,
    }
    return Response(b"", 200, headers=headers)


def _requested_id(name: Any, files: FileStore) -> str | None:
    if name is None:
        return None
    file_id = file_id_of(name) if isinstance(name, str) else None
    if not file_id or not file_id.replace("-", "").isalnum() or file_id != file_id.lower():
        raise BadRequest(f"Invalid file name {name!r}: expected files/ and lowercase letters, digits or '-'.")
    if file_id in files.files:
        raise ApiError(409, f"File files/{file_id} already exists.")
    return file_id


async def _transfer(request: Request, upload_id: str) -> Response:
    files = store(request)
    session = files.uploads.get(upload_id)
    if session is None:
        raise ApiError(404, f"Failed to find the upload session {upload_id}.")
    commands = {c.strip().lower() for c in request.headers.get("x-goog-upload-command", "").split(",")}
    if "cancel" in commands:
        del files.uploads[upload_id]
        return Response(b"", 200, headers={"x-goog-upload-status": "cancelled"})
    if "query" in commands:
        return _status(session, "active")
    if not commands & {"upload", "finalize"}:
        raise BadRequest(f"Unknown X-Goog-Upload-Command {request.headers.get('x-goog-upload-command')!r}.")
    if "upload" in commands:
        offset = request.headers.get("x-goog-upload-offset", "")
        if offset != str(session.received):
            raise BadRequest(
                f"X-Goog-Upload-Offset {offset!r} is not the {session.received} bytes received so far."
            )
        async for chunk in request.stream():
            session.digest.update(chunk)
            session.received += len(chunk)
    if "finalize" not in commands:
        return _status(session, "active")
    if session.declared is not None and session.received != session.declared:
        raise BadRequest(
            f"The upload declared {session.declared} bytes (X-Goog-Upload-Header-Content-Length) "
            f"but {session.received} were sent."
        )
    del files.uploads[upload_id]
    stored = StoredFile(
        id=session.uri.rpartition("/")[2],
        mime_type=session.mime_type,
        size=session.received,
        sha256=session.digest.hexdigest(),
        uri=session.uri,
        created=datetime.now(UTC),
        display_name=session.display_name,
    )
    files.add(stored)
    return json_response({"file": stored.resource()}, headers={"x-goog-upload-status": "final"})


def _status(session: Upload, status: str) -> Response:
    return Response(
        b"",
        200,
        headers={"x-goog-upload-status": status, "x-goog-upload-size-received": str(session.received)},
    )


# --- files ------------------------------------------------------------------------------------------


async def get_file(request: Request) -> Response:
    file_id = request.path_params["file_id"]
    stored = store(request).files.get(file_id)
    if stored is None:
        return error(403, NOT_THERE.format(id=file_id))
    return json_response(stored.resource())


async def delete_file(request: Request) -> Response:
    file_id = request.path_params["file_id"]
    if store(request).files.pop(file_id, None) is None:
        return error(403, NOT_THERE.format(id=file_id))
    return json_response({})


async def list_files(request: Request) -> Response:
    files = [f.resource() for f in reversed(store(request).files.values())]
    return json_response({"files": files} if files else {})


def routes() -> list[Route]:
    out = []
    for version in VERSIONS:
        out += [
            Route(f"/upload/{version}/files", upload, methods=["POST"]),
            Route(f"/{version}/files", list_files, methods=["GET"]),
            Route(f"/{version}/files/{{file_id}}", get_file, methods=["GET"]),
            Route(f"/{version}/files/{{file_id}}", delete_file, methods=["DELETE"]),
        ]
    return out

"""OpenAI's Files API, emulated (what the Batch API reads its input from and writes results to).

``POST /v1/files`` (multipart: ``file``, ``purpose`` one of :data:`PURPOSES`, optional
``expires_after[anchor]=created_at`` and ``expires_after[seconds]`` 3600..2592000; ``batch``
files expire after 30 days by default) answers the ``FileObject`` (``status: "processed"``).
``GET /v1/files`` (``purpose``, ``limit`` 1..10000, default 10000, ``order`` desc by default,
``after``), ``GET /v1/files/{id}``, ``DELETE /v1/files/{id}`` (``{"id", "object": "file",
"deleted": true}``) and ``GET /v1/files/{id}/content`` (the bytes) work on this app's files,
including the ``batch_output`` files its batches write (:mod:`.batches_api`). An unknown or
expired id is a 404.

The Gemini emulation (:mod:`.gemini_files`) serves ``/v1/files`` too (its ``v1`` alias): a
request that looks like Gemini's (an ``x-goog-*`` header or a ``key`` query parameter, as
``google-genai`` sends) and names no file of this module goes to Gemini's handler. The app keeps the last :data:`FILES_KEPT` files (``app.state.openai_files``);
an upload is at most :data:`MAX_UPLOAD_BYTES`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import gemini_files, text
from .common import BadRequest, json_response
from .cursor_page import page
from .job_scenario import app_store
from .openai_api import error

FILES_KEPT = 1000
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
BATCH_FILE_SECONDS = 30 * 86_400
EXPIRY_RANGE = (3600, 2_592_000)


@dataclass
class StoredFile:
    """One file: its bytes and ``FileObject`` fields; times are unix seconds."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int
    expires_at: int | None

    def object(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }

    def expired(self) -> bool:
        return self.expires_at is not None and time.time() >= self.expires_at


def _files(request: Request) -> OrderedDict[str, StoredFile]:
    files: OrderedDict[str, StoredFile] = app_store(request, "openai_files", OrderedDict)
    return files


def add_file(
    request: Request, filename: str, purpose: str, data: bytes, expires_after: int | None = None
) -> StoredFile:
    """Store ``data`` as a new file of this app (the oldest files go past :data:`FILES_KEPT`)."""
    now = int(time.time())
    stored = StoredFile(
        text.new_id("file-"), filename, purpose, data, now, now + expires_after if expires_after else None
    )
    files = _files(request)
    files[stored.id] = stored
    while len(files) > FILES_KEPT:
        files.popitem(last=False)
    return stored


def get_file(request: Request, file_id: str) -> StoredFile | None:
    """The file ``file_id`` of this app, or None (unknown or expired)."""
    stored = _files(request).get(file_id)
    return None if stored is None or stored.expired() else stored


def not_found(file_id: str, param: str = "file_id") -> Response:
    return error(404, f"No such File object: {file_id}", param=param, code=None)


def _expiry(form: Any, purpose: str) -> int | None:
    anchor, seconds = form.get("expires_after[anchor]"), form.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return BATCH_FILE_SECONDS if purpose == "batch" else None
    if anchor != "created_at":
        raise BadRequest(
            "Invalid 'expires_after.anchor': expected 'created_at'.", param="expires_after.anchor"
        )
    try:
        value = int(seconds)
    except (TypeError, ValueError):
        raise BadRequest(
            "Invalid 'expires_after.seconds': expected an integer.", param="expires_after.seconds"
        ) from None
    if not EXPIRY_RANGE[0] <= value <= EXPIRY_RANGE[1]:
        raise BadRequest(
            f"Invalid 'expires_after.seconds': expected {EXPIRY_RANGE[0]}..{EXPIRY_RANGE[1]}.",
            param="expires_after.seconds",
        )
    return value


async def upload(request: Request) -> Response:
    """``POST /v1/files``."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return error(400, "The request must be multipart/form-data with 'file' and 'purpose'.", param="file")
    try:
        form = await request.form(max_files=1, max_fields=16)
    except Exception as exc:  # starlette raises several kinds for a malformed form
        return error(400, f"Could not parse the multipart form: {exc}", param="file")
    try:
        upload_file, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload_file, UploadFile):
            raise BadRequest("Missing required parameter: 'file'.", param="file")
        if not isinstance(purpose, str) or purpose not in PURPOSES:
            listed = ", ".join(f"'{p}'" for p in PURPOSES)
            raise BadRequest(f"Invalid value for 'purpose': expected one of {listed}.", param="purpose")
        expires_after = _expiry(form, purpose)
        data = await upload_file.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise BadRequest(f"The file is larger than {MAX_UPLOAD_BYTES} bytes.", param="file")
    except BadRequest as exc:
        return error(400, exc.message, param=exc.param)
    finally:
        await form.close()
    stored = add_file(request, upload_file.filename or "upload", purpose, data, expires_after)
    return json_response(stored.object())


def _gemini_shaped(request: Request) -> bool:
    return "key" in request.query_params or any(name.startswith("x-goog-") for name in request.headers)


async def list_files(request: Request) -> Response:
    if _gemini_shaped(request):
        return await gemini_files.list_files(request)
    purpose = request.query_params.get("purpose")
    newest_first = [
        f.object()
        for f in reversed(_files(request).values())
        if not f.expired() and (purpose is None or f.purpose == purpose)
    ]
    try:
        return json_response(page(newest_first, request.query_params, default_limit=10_000, max_limit=10_000))
    except BadRequest as exc:
        return error(400, exc.message, param=exc.param)


async def retrieve(request: Request) -> Response:
    stored = get_file(request, request.path_params["file_id"])
    if stored is None and _gemini_shaped(request):
        return await gemini_files.get_file(request)
    return not_found(request.path_params["file_id"]) if stored is None else json_response(stored.object())


async def content(request: Request) -> Response:
    stored = get_file(request, request.path_params["file_id"])
    if stored is None:
        return not_found(request.path_params["file_id"])
    return Response(stored.data, media_type="application/octet-stream")


async def delete(request: Request) -> Response:
    file_id = request.path_params["file_id"]
    if get_file(request, file_id) is None:
        return await gemini_files.delete_file(request) if _gemini_shaped(request) else not_found(file_id)
    del _files(request)[file_id]
    return json_response({"id": file_id, "object": "file", "deleted": True})


def routes() -> list[Route]:
    return [
        Route("/v1/files", upload, methods=["POST"]),
        Route("/v1/files", list_files, methods=["GET"]),
        Route("/v1/files/{file_id}", retrieve, methods=["GET"]),
        Route("/v1/files/{file_id}", delete, methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", content, methods=["GET"]),
    ]

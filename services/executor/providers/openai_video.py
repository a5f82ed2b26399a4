"""OpenAI's videos API, an asynchronous provider: ``POST {base_url}/videos`` submits a job,
``GET {base_url}/videos/{id}`` polls it (``queued`` -> ``in_progress`` with ``progress`` ->
``completed`` | ``failed``), ``GET {base_url}/videos/{id}/content`` downloads the MP4 (the
provider keeps it for a while only: the gateway stores its own copy at once).

Pure mapping plus three I/O calls; no aiohttp error escapes (``map_http_errors``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import orjson

from services.contracts.errors import ProviderError
from services.contracts.events import VideoGenerateRequested

from ..targets import Target
from ..watch import retry_after_ms
from ._http import bearer, error_message, headers, is_success, malformed
from .base import map_http_errors, upstream_error
from .media_base import Downloads, HeadedDownloads
from .transport import HttpTransport

#: The provider's states, as the gateway names them.
DONE, FAILED = "completed", "failed"


@dataclass(frozen=True)
class VideoJob:
    """What a poll says: the provider's id, its status, progress 0..1, its error text."""

    id: str
    status: str
    progress: float | None = None
    error: str | None = None
    seconds: str | None = None
    size: str | None = None
    model: str | None = None
    #: how long the provider asked to wait before the next poll (its ``Retry-After``), if it did
    retry_after_s: float | None = None


#: Poll answers that mean "not now" (the job goes on): waited out, then polled again.
BUSY_STATUSES = frozenset({429, 503})


def to_wire(req: VideoGenerateRequested, deployment: Target) -> dict[str, Any]:
    body: dict[str, Any] = dict(req.extra)
    body["model"] = deployment.upstream_model
    body["prompt"] = req.prompt
    if req.seconds is not None:
        body["seconds"] = req.seconds
    if req.size is not None:
        body["size"] = req.size
    return body


def job_from(provider: str, raw: bytes) -> VideoJob:
    try:
        doc = orjson.loads(raw)
        status = doc["status"]
        job_id = doc["id"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise malformed(provider, "video job", raw) from None
    progress = doc.get("progress")
    err = doc.get("error")
    return VideoJob(
        id=str(job_id),
        status=str(status),
        progress=progress / 100 if isinstance(progress, int | float) else None,
        error=(err.get("message") if isinstance(err, dict) else None) or (str(err) if err else None),
        seconds=doc.get("seconds"),
        size=doc.get("size"),
        model=doc.get("model"),
    )


class OpenAIVideoAdapter:
    kind = "openai"

    def _url(self, deployment: Target, path: str) -> str:
        return f"{deployment.base_url.rstrip('/')}/{path}"

    async def submit(
        self, http: HttpTransport, req: VideoGenerateRequested, deployment: Target, api_key: str | None
    ) -> VideoJob:
        body = orjson.dumps(to_wire(req, deployment))
        with map_http_errors(deployment.provider):
            status, raw = await http.post_json(
                self._url(deployment, "videos"), headers(bearer(api_key)), body, None
            )
        if not is_success(status):
            raise upstream_error(deployment.provider, status, error_message(raw))
        return job_from(deployment.provider, raw)

    async def _get(self, http: HttpTransport, url: str, deployment: Target, api_key: str | None) -> bytes:
        if not isinstance(http, Downloads):
            raise ProviderError(f"{deployment.provider}: the transport cannot GET (polling needs it)")
        with map_http_errors(deployment.provider):
            status, raw = await http.get(url, bearer(api_key), None)
        if not is_success(status):
            raise upstream_error(deployment.provider, status, error_message(raw))
        return raw

    async def poll(
        self, http: HttpTransport, job_id: str, deployment: Target, api_key: str | None
    ) -> VideoJob:
        """The job now, with the provider's ``Retry-After`` hint. A 429 / 503 answer is a
        ``ProviderError`` whose details carry ``upstream_status`` and ``retry_after_ms``."""
        url = self._url(deployment, f"videos/{job_id}")
        if not isinstance(http, HeadedDownloads):
            return job_from(deployment.provider, await self._get(http, url, deployment, api_key))
        with map_http_errors(deployment.provider):
            status, hdrs, raw = await http.get_reply(url, bearer(api_key), None)
        wait_ms = retry_after_ms(hdrs)
        if not is_success(status):
            err = upstream_error(deployment.provider, status, error_message(raw))
            if wait_ms is not None:
                err.details["retry_after_ms"] = wait_ms
            raise err
        job = job_from(deployment.provider, raw)
        return replace(job, retry_after_s=None if wait_ms is None else wait_ms / 1000)

    async def download(
        self, http: HttpTransport, job_id: str, deployment: Target, api_key: str | None
    ) -> bytes:
        return await self._get(http, self._url(deployment, f"videos/{job_id}/content"), deployment, api_key)

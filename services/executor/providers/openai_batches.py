"""OpenAI's Batch API (``batch.run``; base_url ends in /v1).

The lines go up as one JSONL file (``POST {base_url}/files``, multipart, ``purpose=batch``):
``{"custom_id", "method": "POST", "url": <endpoint>, "body"}``, ``body`` being what a single
call sends (``OpenAIAdapter.to_wire`` / ``OpenAIEmbeddingsAdapter.to_wire``, upstream model).
``POST {base_url}/batches`` creates the batch (``completion_window: "24h"``, ``metadata.llmgw_run``
= the run's request id, which is how ``find`` recognises a batch an earlier run created before it
could record it); ``GET {base_url}/batches/{id}`` polls it (``validating`` -> ``in_progress`` ->
``finalizing`` -> ``completed``, or ``failed`` / ``expired`` / ``cancelling`` -> ``cancelled``);
``POST {base_url}/batches/{id}/cancel`` cancels it. Once ended, the output and error files
(``GET {base_url}/files/{id}/content``) hold one line per request: ``response.status_code`` and
``response.body`` (a single call's answer), or ``error.code`` ``batch_cancelled`` /
``batch_expired`` for requests never run.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson

from services.contracts.events import ChatRequested, EmbedRequested

from ..targets import Target
from ._http import bearer, headers
from .batch_base import BatchLine, LineResult, ProviderBatch, document, fetch, jsonl, send
from .openai import OpenAIAdapter
from .openai_embeddings import OpenAIEmbeddingsAdapter
from .openai_media import multipart
from .transport import HttpTransport

ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
#: Error codes of requests a batch never ran.
STOPPED = {"batch_cancelled": "canceled", "batch_expired": "expired"}
#: How many of the newest batches ``find`` looks through.
FIND_LIMIT = 100
RUN_KEY = "llmgw_run"

_chat = OpenAIAdapter()
_embed = OpenAIEmbeddingsAdapter()


def line_body(item: BatchLine, target: Target) -> dict[str, Any]:
    """What a single call of ``item`` sends."""
    if item.operation == "embed":
        assert isinstance(item, EmbedRequested)
        return _embed.to_wire(item, target)
    assert isinstance(item, ChatRequested)
    return _chat.to_wire(item, target, stream=False)


def batch_from(raw: bytes, target: Target) -> ProviderBatch:
    doc = document(target, raw, "batch")
    status = str(doc.get("status") or "")
    counts = doc.get("request_counts") or {}
    errors = (doc.get("errors") or {}).get("data") or []
    reason = "; ".join(
        f"{e.get('code')}: {e.get('message')}" + (f" (line {e['line']})" if e.get("line") else "")
        for e in errors
        if isinstance(e, dict)
    )
    return ProviderBatch(
        id=str(doc.get("id") or ""),
        status=status,
        ended=status in ENDED,
        failed=status == "failed",
        done=int(counts.get("completed") or 0) + int(counts.get("failed") or 0),
        total=int(counts.get("total") or 0),
        error=reason or None,
        files=tuple(f for f in (doc.get("output_file_id"), doc.get("error_file_id")) if isinstance(f, str)),
    )


class OpenAIBatchesAdapter:
    kind = "openai"

    def _url(self, target: Target, path: str) -> str:
        return f"{target.base_url.rstrip('/')}/{path}"

    def lines(self, items: Sequence[BatchLine], target: Target, endpoint: str) -> list[dict[str, Any]]:
        return [
            {
                "custom_id": str(item.batch.index if item.batch else i),
                "method": "POST",
                "url": endpoint,
                "body": line_body(item, target),
            }
            for i, item in enumerate(items)
        ]

    def parse_results(self, raw: bytes) -> list[LineResult]:
        out = []
        for doc in jsonl(raw):
            custom_id = doc.get("custom_id")
            if not isinstance(custom_id, str):
                continue
            response, error = doc.get("response"), doc.get("error")
            if isinstance(response, dict):
                status = response.get("status_code")
                body = response.get("body")
                body = body if isinstance(body, dict) else None
                ok = status == 200 and body is not None
                message = None if ok else _message(body) or f"HTTP {status}"
                out.append(LineResult(custom_id, "succeeded" if ok else "errored", status, body, message))
                continue
            code = error.get("code") if isinstance(error, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            kind = STOPPED.get(str(code), "errored")
            out.append(LineResult(custom_id, kind, None, error if isinstance(error, dict) else None, message))  # type: ignore[arg-type]
        return out

    async def find(
        self, http: HttpTransport, target: Target, api_key: str | None, run_id: str
    ) -> ProviderBatch | None:
        raw, _ = await fetch(http, target, self._url(target, f"batches?limit={FIND_LIMIT}"), bearer(api_key))
        for doc in document(target, raw, "batch list").get("data") or []:
            if isinstance(doc, dict) and (doc.get("metadata") or {}).get(RUN_KEY) == run_id:
                return batch_from(orjson.dumps(doc), target)
        return None

    async def submit(
        self,
        http: HttpTransport,
        items: Sequence[BatchLine],
        target: Target,
        api_key: str | None,
        endpoint: str,
        run_id: str,
    ) -> ProviderBatch:
        data = b"".join(orjson.dumps(line) + b"\n" for line in self.lines(items, target, endpoint))
        boundary = f"llmgw-{secrets.token_hex(16)}"
        body = multipart([("purpose", "batch")], (f"{run_id}.jsonl", "application/jsonl", data), boundary)
        hdrs = {"content-type": f"multipart/form-data; boundary={boundary}", **bearer(api_key)}
        uploaded = document(target, await send(http, target, self._url(target, "files"), hdrs, body), "file")
        create = {
            "input_file_id": uploaded.get("id"),
            "endpoint": endpoint,
            "completion_window": "24h",
            "metadata": {RUN_KEY: run_id},
        }
        raw = await send(
            http, target, self._url(target, "batches"), headers(bearer(api_key)), orjson.dumps(create)
        )
        return batch_from(raw, target)

    async def poll(
        self, http: HttpTransport, batch_id: str, target: Target, api_key: str | None
    ) -> ProviderBatch:
        raw, wait = await fetch(http, target, self._url(target, f"batches/{batch_id}"), bearer(api_key))
        batch = batch_from(raw, target)
        return batch if wait is None else replace(batch, retry_after_s=wait)

    async def cancel(
        self, http: HttpTransport, batch_id: str, target: Target, api_key: str | None
    ) -> ProviderBatch:
        url = self._url(target, f"batches/{batch_id}/cancel")
        return batch_from(await send(http, target, url, headers(bearer(api_key)), b"{}"), target)

    async def results(
        self, http: HttpTransport, batch: ProviderBatch, target: Target, api_key: str | None
    ) -> list[LineResult]:
        out: list[LineResult] = []
        for file_id in batch.files:
            raw, _ = await fetch(http, target, self._url(target, f"files/{file_id}/content"), bearer(api_key))
            out += self.parse_results(raw)
        return out


def _message(body: dict[str, Any] | None) -> str | None:
    err = (body or {}).get("error")
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return str(err["message"])
    return None

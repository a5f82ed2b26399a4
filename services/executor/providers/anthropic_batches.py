"""Anthropic's Message Batches (``batch.run``): ``POST {base_url}/v1/messages/batches`` with
``requests: [{"custom_id", "params"}]``, ``params`` being what a single call sends
(``AnthropicAdapter.to_wire``, upstream model, no ``stream``); ``GET .../{id}`` polls it
(``processing_status`` ``in_progress`` -> ``ended``, or ``canceling`` -> ``ended`` after
``POST .../{id}/cancel``). Once ended, ``GET .../{id}/results`` is JSONL in no fixed order:
``{"custom_id", "result": {"type": "succeeded", "message"} | {"type": "errored", "error":
{"type": "error", "error": {"type", "message"}}} | {"type": "canceled"} | {"type": "expired"}}``.
The results URL is built from the configured ``base_url``, never taken from the answer (the
credential goes only where the configuration says).

Anthropic keeps no metadata on a batch: ``find`` cannot recognise one an earlier run created
before it could record it (the executor records it right after the create call answers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson

from services.contracts.errors import CapabilityNotSupported
from services.contracts.events import ChatRequested

from ..targets import Target
from ._http import headers
from .anthropic import API_VERSION, AnthropicAdapter, error_status
from .batch_base import BatchLine, LineResult, ProviderBatch, document, fetch, jsonl, send
from .transport import HttpTransport

KINDS = frozenset({"succeeded", "errored", "canceled", "expired"})

_chat = AnthropicAdapter()


def auth(api_key: str | None) -> dict[str, str]:
    return headers({**({"x-api-key": api_key} if api_key else {}), "anthropic-version": API_VERSION})


def batch_from(raw: bytes, target: Target) -> ProviderBatch:
    doc = document(target, raw, "message batch")
    status = str(doc.get("processing_status") or "")
    counts = doc.get("request_counts") or {}
    total = sum(int(v or 0) for v in counts.values()) if isinstance(counts, dict) else 0
    processing = int(counts.get("processing") or 0) if isinstance(counts, dict) else 0
    return ProviderBatch(
        id=str(doc.get("id") or ""),
        status=status,
        ended=status == "ended",
        done=total - processing,
        total=total,
    )


class AnthropicBatchesAdapter:
    kind = "anthropic"

    def _url(self, target: Target, path: str = "") -> str:
        return f"{target.base_url.rstrip('/')}/v1/messages/batches{path}"

    def lines(self, items: Sequence[BatchLine], target: Target, endpoint: str) -> list[dict[str, Any]]:
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, ChatRequested):
                raise CapabilityNotSupported("Anthropic's Message Batches take chat requests only")
            params = _chat.to_wire(item, target, stream=False)
            out.append({"custom_id": str(item.batch.index if item.batch else i), "params": params})
        return out

    def parse_results(self, raw: bytes) -> list[LineResult]:
        out = []
        for doc in jsonl(raw):
            custom_id, result = doc.get("custom_id"), doc.get("result")
            if not isinstance(custom_id, str) or not isinstance(result, dict):
                continue
            kind = result.get("type")
            if kind not in KINDS:
                kind = "errored"
            if kind == "succeeded":
                message = result.get("message")
                out.append(
                    LineResult(custom_id, "succeeded", 200, message if isinstance(message, dict) else None)
                )
            elif kind == "errored":
                body = result.get("error") if isinstance(result.get("error"), dict) else None
                inner = (body or {}).get("error") or {}
                status = error_status(inner.get("type")) if isinstance(inner, dict) else None
                text = inner.get("message") if isinstance(inner, dict) else None
                out.append(LineResult(custom_id, "errored", status, body, text or "errored"))
            else:
                out.append(LineResult(custom_id, "canceled" if kind == "canceled" else "expired"))
        return out

    async def find(
        self, http: HttpTransport, target: Target, api_key: str | None, run_id: str
    ) -> ProviderBatch | None:
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
        body = orjson.dumps({"requests": self.lines(items, target, endpoint)})
        return batch_from(await send(http, target, self._url(target), auth(api_key), body), target)

    async def poll(
        self, http: HttpTransport, batch_id: str, target: Target, api_key: str | None
    ) -> ProviderBatch:
        raw, wait = await fetch(http, target, self._url(target, f"/{batch_id}"), auth(api_key))
        batch = batch_from(raw, target)
        return batch if wait is None else replace(batch, retry_after_s=wait)

    async def cancel(
        self, http: HttpTransport, batch_id: str, target: Target, api_key: str | None
    ) -> ProviderBatch:
        raw = await send(http, target, self._url(target, f"/{batch_id}/cancel"), auth(api_key), b"{}")
        return batch_from(raw, target)

    async def results(
        self, http: HttpTransport, batch: ProviderBatch, target: Target, api_key: str | None
    ) -> list[LineResult]:
        raw, _ = await fetch(http, target, self._url(target, f"/{batch.id}/results"), auth(api_key))
        return self.parse_results(raw)

"""The batch-API adapter role (``batch.run``: OpenAI's Batch API, Anthropic's Message Batches)
and the normalised shapes it produces: ``base.py``'s counterpart for a whole batch sent at once.

A batch's lines are the bodies single calls would send (the kind's chat or embeddings
``to_wire``, the upstream model), each under ``custom_id`` = the line's index in the batch.
``ProviderBatch`` is what a poll says; ``LineResult`` is one line's answer once the batch ended,
still in the provider's wire shape (``body``: the very body a single call would have been
answered with), so the executor reads it with the kind's normal response parser.

Like the other adapters, only the I/O methods touch the ``HttpTransport`` and no ``aiohttp``
error escapes them (``map_http_errors``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from services.contracts.errors import ProviderError
from services.contracts.events import ChatRequested, EmbedRequested

from ..targets import Target
from ..watch import retry_after_ms
from ._http import error_message, is_success, malformed
from .base import map_http_errors, upstream_error
from .media_base import Downloads, HeadedDownloads
from .transport import HttpTransport

#: How a line ended at the provider (Anthropic's names; OpenAI's map onto them).
LineKind = Literal["succeeded", "errored", "canceled", "expired"]
#: What a batch's lines are.
BatchLine = ChatRequested | EmbedRequested
#: Poll answers that mean "not now" (the batch goes on): waited out, then polled again.
BUSY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class ProviderBatch:
    """A provider's batch as a poll saw it.

    ``ended``: the provider will change nothing more (results can be read, unless ``failed``:
    the provider refused the whole batch, ``error`` says why). ``done``/``total``: lines finished
    so far. ``files``: where the results are (OpenAI's output and error file ids)."""

    id: str
    status: str
    ended: bool = False
    failed: bool = False
    done: int = 0
    total: int = 0
    error: str | None = None
    files: tuple[str, ...] = ()
    #: how long the provider asked to wait before the next poll (its ``Retry-After``), if it did
    retry_after_s: float | None = None


@dataclass(frozen=True)
class LineResult:
    """One line's outcome: ``succeeded`` with the provider's answer ``body``; ``errored`` with
    its HTTP ``status`` (when known) and error ``body`` (``message``: its text); ``canceled`` /
    ``expired``: never run (a cancel, or the completion window, stopped it)."""

    custom_id: str
    kind: LineKind
    status: int | None = None
    body: dict[str, Any] | None = None
    message: str | None = None


class BatchApiAdapter(Protocol):
    """Operation ``batch.run`` of one provider kind."""

    kind: str

    def lines(self, items: Sequence[BatchLine], target: Target, endpoint: str) -> list[dict[str, Any]]:
        """The provider's batch lines for ``items`` (pure): ``custom_id`` is ``str(item.batch.index)``."""
        ...

    def parse_results(self, raw: bytes) -> list[LineResult]:
        """The lines of a results file (pure; any order)."""
        ...

    async def find(
        self, http: HttpTransport, target: Target, api_key: str | None, run_id: str
    ) -> ProviderBatch | None:
        """The batch an earlier run of ``run_id`` created, when the provider can tell (None: none found)."""
        ...

    async def submit(
        self,
        http: HttpTransport,
        items: Sequence[BatchLine],
        target: Target,
        api_key: str | None,
        endpoint: str,
        run_id: str,
    ) -> ProviderBatch: ...

    async def poll(
        self, http: HttpTransport, batch_id: str, target: Target, api_key: str | None
    ) -> ProviderBatch:
        """The batch now; a 429 / 503 is a ``ProviderError`` with ``upstream_status`` and
        ``retry_after_ms`` in its details."""
        ...

    async def cancel(
        self, http: HttpTransport, batch_id: str, target: Target, api_key: str | None
    ) -> ProviderBatch: ...

    async def results(
        self, http: HttpTransport, batch: ProviderBatch, target: Target, api_key: str | None
    ) -> list[LineResult]:
        """Every line's outcome of an ended batch (lines the provider reports nothing of are absent)."""
        ...


# --- HTTP the two batch adapters share ---------------------------------------------------------


async def send(http: HttpTransport, target: Target, url: str, hdrs: dict[str, str], body: bytes) -> bytes:
    """POST ``body``; the answer's bytes (a non-2xx answer is ``upstream_error``)."""
    with map_http_errors(target.provider):
        status, raw = await http.post_json(url, hdrs, body, target.timeout_s)
    if not is_success(status):
        raise upstream_error(target.provider, status, error_message(raw))
    return raw


async def fetch(
    http: HttpTransport, target: Target, url: str, hdrs: dict[str, str]
) -> tuple[bytes, float | None]:
    """GET ``url``: its bytes and the wait its ``Retry-After`` asked for (seconds). A non-2xx
    answer is ``upstream_error``, carrying ``retry_after_ms`` when the provider sent one."""
    if isinstance(http, HeadedDownloads):
        with map_http_errors(target.provider):
            status, headers_, raw = await http.get_reply(url, hdrs, target.timeout_s)
        wait_ms = retry_after_ms(headers_)
    elif isinstance(http, Downloads):
        with map_http_errors(target.provider):
            status, raw = await http.get(url, hdrs, target.timeout_s)
        wait_ms = None
    else:
        raise ProviderError(f"{target.provider}: the transport cannot GET (batches need it)")
    if not is_success(status):
        err = upstream_error(target.provider, status, error_message(raw))
        if wait_ms is not None:
            err.details["retry_after_ms"] = wait_ms
        raise err
    return raw, None if wait_ms is None else wait_ms / 1000


def document(target: Target, raw: bytes, what: str) -> dict[str, Any]:
    """A JSON object the provider answered (else a malformed answer)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise malformed(target.provider, f"{what} is not a JSON object", raw)
    return doc


def jsonl(raw: bytes) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL body (blank lines and lines that are not objects skipped)."""
    out = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out

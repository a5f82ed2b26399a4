"""``GET /metrics``: the edge process's Prometheus metrics on its own HTTP port (the same text
as its ``LLMGW_METRICS_PORT``; with several edge workers, the metrics of the worker that took
the connection). No key: metric label values never carry ids (``services/runtime/metrics.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.runtime import metrics

from ..asgi import Request, Response

if TYPE_CHECKING:
    from ..context import Edge


async def metrics_text(edge: Edge, req: Request) -> Response:
    """The Prometheus text exposition of this process's registry."""
    body, content_type = metrics.exposition()
    return Response(200, body, content_type=(b"content-type", content_type.encode()))

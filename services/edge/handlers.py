"""Every route of the edge, in one table.

A capability (embeddings, images, audio, batches, ...) adds its module under
``services/edge/api/`` and its lines here: method, path, handler, error shape, and
whether it reads a body. Handlers take ``(Edge, Request)`` and return a ``Response``
or an ``SseResponse``; a ``GatewayError`` they raise becomes the route's error body.
"""

from __future__ import annotations

from services.contracts.errors import GatewayError

from .api import chat, embeddings, models, native
from .asgi import Request, Response, Route
from .context import Edge
from .errors import HTTPError, openai_error


def openai_errors(err: GatewayError | HTTPError, req: Request) -> tuple[int, bytes]:
    return openai_error(err)


async def healthz(edge: Edge, req: Request) -> Response:
    """The process is up."""
    return Response(200, b'{"status":"ok"}')


async def readyz(edge: Edge, req: Request) -> Response:
    """The Kafka client is started: requests can be served."""
    if edge.pipeline is None:
        return Response(503, b'{"status":"starting"}')
    return Response(200, b'{"status":"ready"}')


ROUTES: list[Route] = [
    Route("GET", "/healthz", healthz, openai_errors, auth=False),
    Route("GET", "/readyz", readyz, openai_errors, auth=False),
    # OpenAI-compatible API
    Route(
        "POST",
        "/v1/chat/completions",
        chat.create_chat_completion,
        openai_errors,
        body=True,
        operation="chat",
    ),
    Route(
        "POST", "/v1/embeddings", embeddings.create_embeddings, openai_errors, body=True, operation="embed"
    ),
    Route("GET", "/v1/models", models.list_models, openai_errors, operation="models.list"),
    Route("GET", "/v1/models/{model}", models.retrieve_model, openai_errors, operation="models.list"),
    # native API
    Route("POST", "/v1/chat", native.chat, native.errors, body=True, operation="chat"),
]

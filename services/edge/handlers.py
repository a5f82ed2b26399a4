"""Every route of the edge, in one table.

A capability (embeddings, images, audio, batches, ...) adds its module under
``services/edge/api/`` and its lines here: method, path, handler, error shape, and
whether it reads a body. Handlers take ``(Edge, Request)`` and return a ``Response``
or an ``SseResponse``; a ``GatewayError`` they raise becomes the route's error body.
"""

from __future__ import annotations

from services.contracts.errors import GatewayError

from .api import (
    audio,
    batches,
    chat,
    dashboard,
    embeddings,
    files,
    images,
    jobs,
    message_batches,
    messages,
    models,
    native,
    transcriptions,
    videos,
)
from .api.metrics import metrics_text
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


#: The usage dashboard's routes and caches (its data route checks the admin or tenant key itself).
usage_dashboard = dashboard.Dashboard()

ROUTES: list[Route] = [
    Route("GET", "/healthz", healthz, openai_errors, auth=False),
    Route("GET", "/readyz", readyz, openai_errors, auth=False),
    Route("GET", "/metrics", metrics_text, openai_errors, auth=False),
    Route("GET", "/dashboard", usage_dashboard.page, openai_errors, auth=False),
    Route("GET", "/dashboard/data", usage_dashboard.data, openai_errors, auth=False),
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
    Route(
        "POST",
        "/v1/images/generations",
        images.create_image,
        openai_errors,
        body=True,
        operation="image.generate",
    ),
    Route(
        "POST", "/v1/audio/speech", audio.create_speech, openai_errors, body=True, operation="audio.speech"
    ),
    # uploads read their own bodies, streamed, up to media.max_bytes (JSON bodies: max_body_bytes)
    Route(
        "POST",
        "/v1/audio/transcriptions",
        transcriptions.create_transcription,
        openai_errors,
        operation="audio.transcribe",
    ),
    Route("POST", "/v1/files", files.create_file, openai_errors),
    Route("GET", "/v1/files", files.list_files, openai_errors),
    Route("GET", "/v1/files/{file_id}", files.get_file, openai_errors),  # also .../{file_id}/content
    Route("DELETE", "/v1/files/{file_id}", files.delete_file, openai_errors),
    Route("POST", "/v1/videos", videos.create_video, openai_errors, operation="video.generate"),
    Route("GET", "/v1/videos/{video_id}", videos.get_video, openai_errors),  # also .../{video_id}/content
    Route("GET", "/v1/jobs/{job_id}", jobs.get_job, openai_errors),
    Route("POST", "/v1/jobs/{job_id}", jobs.cancel_job, openai_errors),  # .../{job_id}/cancel
    Route("POST", "/v1/batches", batches.create_batch, openai_errors, body=True),
    Route("GET", "/v1/batches", batches.list_batches, openai_errors),
    Route("GET", "/v1/batches/{batch_id}", batches.get_batch, openai_errors),
    Route("POST", "/v1/batches/{batch_id}", batches.cancel_batch, openai_errors),  # .../{batch_id}/cancel
    Route("GET", "/v1/models", models.list_models, openai_errors, operation="models.list"),
    Route("GET", "/v1/models/{model}", models.retrieve_model, openai_errors, operation="models.list"),
    # Anthropic Messages API: authenticates (x-api-key or bearer) and reads its body itself
    Route("POST", "/v1/messages", messages.create_message, messages.errors, auth=False, operation="chat"),
    Route("POST", "/v1/messages/count_tokens", messages.count_tokens, messages.errors, auth=False),
    Route("POST", "/v1/messages/batches", message_batches.create_batch, messages.errors, auth=False),
    Route("GET", "/v1/messages/batches", message_batches.list_batches, messages.errors, auth=False),
    # .../{batch_id} and .../{batch_id}/results; POST: .../{batch_id}/cancel
    Route("GET", "/v1/messages/batches/{batch_id}", message_batches.get_batch, messages.errors, auth=False),
    Route(
        "POST", "/v1/messages/batches/{batch_id}", message_batches.cancel_batch, messages.errors, auth=False
    ),
    Route(
        "DELETE", "/v1/messages/batches/{batch_id}", message_batches.delete_batch, messages.errors, auth=False
    ),
    # native API
    Route("POST", "/v1/chat", native.chat, native.errors, body=True, operation="chat"),
]

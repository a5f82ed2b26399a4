"""The emulator ASGI app: every wire format on its real path, one port for every SDK.

``GET /v1/models`` is shared by OpenAI and Anthropic; requests carrying an
``anthropic-version`` header (every Anthropic SDK sends one) get Anthropic's shape.
``fail_first`` counters live in ``app.state.fail_counts`` (per app instance).

Emulator-only routes (under ``/_emulator/``, a prefix no provider uses):

``GET /_emulator/calls[?kind=embeddings|chat|images|speech|transcriptions]``
    The calls this app instance (in practice: this emulator process) received, oldest
    first, at most the last :data:`~.common.CALLS_KEPT` (10 000), of the kind asked for (``kind``
    ``embeddings`` or ``chat``; omitted: both; another kind is a 400). Embeddings calls
    (``/v1/embeddings``, ``/api/embed`` and the legacy ``/api/embeddings``) and chat calls
    (``/v1/chat/completions``, ``/v1/messages``, ``/api/chat``) are logged once their body and
    scenario parsed, as ``{"kind", "path", "model" (without the scenario), "inputs": [...]
    (embeddings: as sent, strings or token arrays for OpenAI; chat: the last user message's
    text), "time" (unix seconds), "status"}``; ``status`` is the HTTP status answered (also for
    scenario failures; 200 for a stream once its head is sent), ``null`` while in flight or for
    dropped / hung requests.
    Chat calls whose request carried images, documents or audio also have ``"media": ["saw
    image/png 1234 bytes", ...]`` (see :mod:`.attachments`); media calls are kinds ``images``,
    ``speech`` and ``transcriptions``.
``DELETE /_emulator/calls[?kind=embeddings|chat]``
    Forget the recorded calls; answers ``{"deleted": N}``.
``GET /_emulator/videos/{id}``
    The polls a video job received: ``{"id", "polls": N, "at": [clock times]}`` (see
    :mod:`.videos_api`).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import (
    anthropic_api,
    batches_api,
    gemini_api,
    media_api,
    ollama_api,
    openai_api,
    realtime_api,
    videos_api,
)
from .common import CALL_KINDS, EmulatorApp, json_response, new_call_log


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def list_models(request: Request) -> Response:
    if "anthropic-version" in request.headers:
        return json_response(anthropic_api.models_body())
    return json_response(openai_api.models_body())


async def get_model(request: Request) -> Response:
    model_id = request.path_params["model_id"]
    if "anthropic-version" in request.headers:
        return json_response(anthropic_api.model_body(model_id))
    return json_response(openai_api.model_body(model_id))


def _kind(request: Request) -> tuple[str | None, Response | None]:
    kind = request.query_params.get("kind")
    if kind is not None and kind not in CALL_KINDS:
        return None, json_response(
            {"error": f"unknown call kind {kind!r} (known: {', '.join(CALL_KINDS)})"}, 400
        )
    return kind, None


async def list_calls(request: Request) -> Response:
    kind, refused = _kind(request)
    if refused is not None:
        return refused
    log = request.app.state.calls
    return json_response([entry for entry in log if kind is None or entry["kind"] == kind])


async def clear_calls(request: Request) -> Response:
    kind, refused = _kind(request)
    if refused is not None:
        return refused
    log = request.app.state.calls
    kept = [entry for entry in log if kind is not None and entry["kind"] != kind]
    deleted = len(log) - len(kept)
    log.clear()
    log.extend(kept)
    return json_response({"deleted": deleted})


def create_app() -> Starlette:
    """A fresh emulator app (own ``fail_first`` counters and call log)."""
    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/_emulator/calls", list_calls, methods=["GET"]),
        Route("/_emulator/calls", clear_calls, methods=["DELETE"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
        *openai_api.routes(),
        *anthropic_api.routes(),
        *ollama_api.routes(),
        *batches_api.routes(),  # before gemini_api: both serve /v1/files/{id}; see openai_files
        *gemini_api.routes(),
        *media_api.routes(),
        *realtime_api.routes(),
        *videos_api.routes(),
    ]
    app = EmulatorApp(routes=routes)
    app.state.fail_counts = {}
    app.state.calls = new_call_log()
    return app

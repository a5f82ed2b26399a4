"""The emulator ASGI app: every wire format on its real path, one port for every SDK.

``GET /v1/models`` is shared by OpenAI and Anthropic; requests carrying an
``anthropic-version`` header (every Anthropic SDK sends one) get Anthropic's shape.
``fail_first`` counters live in ``app.state.fail_counts`` (per app instance).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import anthropic_api, ollama_api, openai_api
from .common import EmulatorApp, json_response


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


def create_app() -> Starlette:
    """A fresh emulator app (own ``fail_first`` counters)."""
    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
        *openai_api.routes(),
        *anthropic_api.routes(),
        *ollama_api.routes(),
    ]
    app = EmulatorApp(routes=routes)
    app.state.fail_counts = {}
    return app

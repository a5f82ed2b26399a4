"""``GET /v1/models`` and ``GET /v1/models/{model}``: the catalog as OpenAI model objects.

Both send a ``models.list`` request through the pipeline (the second filtered to one alias),
so they answer exactly what ``GatewayClient.list_models`` gets over Kafka: the router's
answer from its Model Registry, for the caller's tenant only (``allowed_models``, minus models
disabled by policy), with ``usable`` as the router sees it. Beyond OpenAI's fields (``id``,
``object: "model"``, ``created``, ``owned_by``) each object carries the gateway's:
``description``, ``operations``, ``capabilities``, ``context_window``,
``max_output_tokens``, ``routing``, ``usable``, ``pricing`` (the first deployment's: USD per
million tokens, ``per_unit`` for other units) and ``deployments`` (provider, upstream model,
pricing, usable, ``ttft_ms_avg``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from services.contracts.events import ModelInfo, Price

from ..asgi import Request, Response

if TYPE_CHECKING:
    from ..context import Edge

OWNER = "llmgw"
#: How long a catalog request may take before the caller gets ``gateway_timeout``.
TIMEOUT_S = 30.0


def pricing(price: Price) -> dict[str, Any]:
    return {
        "currency": "USD",
        "unit": "1M tokens",
        "input_per_mtok": price.input_per_mtok,
        "output_per_mtok": price.output_per_mtok,
        "cached_input_per_mtok": price.cached_input_per_mtok,
        "per_unit": dict(price.per_unit),
    }


def model_object(m: ModelInfo, created: int) -> dict[str, Any]:
    """One ``ModelInfo`` as an OpenAI model object with the gateway's fields."""
    return {
        "id": m.id,
        "object": "model",
        "created": created,
        "owned_by": OWNER,
        "description": m.description,
        "operations": list(m.operations),
        "capabilities": list(m.capabilities),
        "context_window": m.context_window,
        "max_output_tokens": m.max_output_tokens,
        "routing": m.routing,
        "usable": m.usable,
        "pricing": pricing(m.price),
        "deployments": [
            {
                "provider": d.provider,
                "model": d.model,
                "pricing": pricing(d.price),
                "usable": d.usable,
                "ttft_ms_avg": d.ttft_ms_avg,
            }
            for d in m.deployments
        ],
    }


async def list_models(edge: Edge, req: Request) -> Response:
    assert req.caller is not None
    models = await req.until_disconnect(edge.gw.models(req.caller, None, TIMEOUT_S))
    body = {"object": "list", "data": [model_object(m, edge.created) for m in models]}
    return Response(200, orjson.dumps(body))


async def retrieve_model(edge: Edge, req: Request) -> Response:
    """One model; ``model_not_found`` (404) when the tenant cannot see it (the router's answer)."""
    assert req.caller is not None
    models = await req.until_disconnect(edge.gw.models(req.caller, req.params["model"], TIMEOUT_S))
    return Response(200, orjson.dumps(model_object(models[0], edge.created)))

"""``GET /v1/models`` and ``GET /v1/models/{model}``: the catalog as OpenAI model objects.

A tenant sees only the models it may use (``allowed_models``, minus models disabled by
policy). Beyond OpenAI's fields each object carries the gateway's: ``capabilities``,
``context_window``, ``max_output_tokens``, ``description`` and ``pricing`` (USD per
million tokens, from the model's first deployment). The answers depend only on the
configuration, so they are serialised once at start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from services.contracts.errors import ModelNotFound
from services.runtime.config import GatewayConfig, ModelConfig

from ..asgi import Request, Response

if TYPE_CHECKING:
    from ..context import Edge

OWNER = "llmgw"


def model_object(alias: str, model: ModelConfig, created: int) -> dict[str, Any]:
    price = model.deployments[0].price
    return {
        "id": alias,
        "object": "model",
        "created": created,
        "owned_by": OWNER,
        "description": model.description,
        "capabilities": list(model.capabilities),
        "context_window": model.context_window,
        "max_output_tokens": model.max_output_tokens,
        "pricing": {
            "currency": "USD",
            "unit": "1M tokens",
            "input_per_mtok": price.input_per_mtok,
            "output_per_mtok": price.output_per_mtok,
            "cached_input_per_mtok": price.cached_input_per_mtok,
        },
    }


def visible_models(config: GatewayConfig, tenant_id: str) -> list[str]:
    """Aliases the tenant may use, sorted."""
    tenant = config.tenants.get(tenant_id)
    if tenant is None:
        return []
    disabled = set(config.policies.disabled_models)
    return sorted(a for a in config.models if a not in disabled and tenant.allows(a))


class Catalog:
    """Pre-serialised model lists and model objects per tenant."""

    def __init__(self, config: GatewayConfig, created: int = 0):
        self._lists: dict[str, bytes] = {}
        self._models: dict[str, dict[str, bytes]] = {}
        objects = {alias: model_object(alias, m, created) for alias, m in config.models.items()}
        for tenant in config.tenants:
            aliases = visible_models(config, tenant)
            self._lists[tenant] = orjson.dumps({"object": "list", "data": [objects[a] for a in aliases]})
            self._models[tenant] = {a: orjson.dumps(objects[a]) for a in aliases}

    def list_body(self, tenant_id: str) -> bytes:
        return self._lists.get(tenant_id, b'{"object":"list","data":[]}')

    def model_body(self, tenant_id: str, alias: str) -> bytes:
        body = self._models.get(tenant_id, {}).get(alias)
        if body is None:
            raise ModelNotFound(f"model {alias!r} does not exist or is not available to you", param="model")
        return body


async def list_models(edge: Edge, req: Request) -> Response:
    assert req.caller is not None
    return Response(200, edge.catalog.list_body(req.caller.tenant_id))


async def retrieve_model(edge: Edge, req: Request) -> Response:
    assert req.caller is not None
    return Response(200, edge.catalog.model_body(req.caller.tenant_id, req.params["model"]))

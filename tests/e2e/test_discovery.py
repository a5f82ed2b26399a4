"""Model discovery on the whole stack: ``models.list`` over Kafka (the router answers) and
``GET /v1/models`` at the edge, which sends the same request and so answers the same."""

from __future__ import annotations

import httpx
import pytest

from services.contracts.errors import ModelNotFound
from services.runtime.config import load_config
from tests.unit.edge.openai_spec import check

AUTH = {"authorization": "Bearer sk-llmgw-demo"}
RESTRICTED = {"authorization": "Bearer sk-llmgw-restricted"}


@pytest.fixture(scope="module")
def demo_config(stack_settings):
    return load_config(stack_settings.config_path, stack_settings.env)


async def test_list_models_over_kafka_filters_by_capability(gw):
    ids = [m.id for m in await gw.list_models(capability="embeddings")]
    assert "demo-embed" in ids and "demo-embed-ollama" in ids and "demo-openai" not in ids
    assert [m.id for m in await gw.list_models(operation="embed")] == ids
    assert [m.id for m in await gw.list_models(provider="anthropic")] == ["demo-anthropic"]


async def test_each_model_says_capabilities_limits_prices_and_usable(gw):
    [routed] = await gw.list_models(model="demo-routed")
    assert routed.routing == "cheapest" and routed.operations == ["chat"] and "tools" in routed.capabilities
    assert (routed.context_window, routed.max_output_tokens) == (128000, 16384)
    assert [
        (d.provider, d.model, d.price.input_per_mtok, d.price.output_per_mtok) for d in routed.deployments
    ] == [("emulator-openai", "gpt-emu", 0.15, 0.6), ("emulator-openai", "gpt-emu-mini", 0.05, 0.2)]
    assert routed.usable and all(d.usable for d in routed.deployments)
    with pytest.raises(ModelNotFound, match="'no-such-model' does not exist"):
        await gw.list_models(model="no-such-model")


async def test_the_restricted_tenant_sees_only_its_models(restricted_gw, demo_config):
    allowed = sorted(demo_config.tenants["restricted"].allowed_models)
    assert [m.id for m in await restricted_gw.list_models()] == allowed and "demo-anthropic" not in allowed
    with pytest.raises(ModelNotFound):
        await restricted_gw.list_models(model="demo-anthropic")


async def test_edge_models_answer_what_kafka_answers(gw, edge_url):
    over_kafka = await gw.list_models()
    async with httpx.AsyncClient(base_url=edge_url, timeout=30) as http:
        r = await http.get("/v1/models", headers=AUTH)
        assert r.status_code == 200
        check("ListModelsResponse", r.json())
        data = r.json()["data"]
        assert [m["id"] for m in data] == [m.id for m in over_kafka]
        for obj, info in zip(data, over_kafka, strict=True):
            assert (obj["object"], obj["owned_by"]) == ("model", "llmgw")
            assert (obj["capabilities"], obj["operations"], obj["routing"], obj["context_window"]) == (
                info.capabilities,
                info.operations,
                info.routing,
                info.context_window,
            )
            assert [
                (d["provider"], d["model"], d["pricing"]["input_per_mtok"]) for d in obj["deployments"]
            ] == [(d.provider, d.model, d.price.input_per_mtok) for d in info.deployments]
        r = await http.get("/v1/models/demo-embed", headers=AUTH)
        check("Model", r.json())
        assert r.json()["operations"] == ["embed"]
        r = await http.get("/v1/models/demo-anthropic", headers=RESTRICTED)
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        r = await http.get("/v1/models", headers=RESTRICTED)
        assert "demo-anthropic" not in [m["id"] for m in r.json()["data"]]

"""``models.list`` as the router answers it: the tenant's models, filters, capabilities,
limits, per-unit prices, and usable / ttft_ms_avg from the routing statistics."""

from __future__ import annotations

import pytest

from services.contracts.errors import ModelNotApproved, ModelNotFound
from services.contracts.events import ModelFilter, ModelsListRequested
from services.router.discovery import models_result
from services.router.stats import RoutingStats
from services.runtime.config import ModelConfig

NOW = 3_000_000.0


def listed(config, tenant="t", health=None, catalog=None, **filters):
    req = ModelsListRequested(request_id="m", tenant_id=tenant, filter=ModelFilter(**filters))
    result = models_result(config, req, health, catalog)
    assert result.status == "ok" and result.operation == "models.list"
    return result.output.models


def ids(models):
    return [m.id for m in models]


def test_the_tenant_sees_only_its_models(routing_config):
    assert ids(listed(routing_config)) == sorted(routing_config.models)
    assert ids(listed(routing_config, "narrow")) == ["embedder", "notools"]
    with pytest.raises(ModelNotApproved, match="tenant 'ghost' is not configured"):
        listed(routing_config, "ghost")


def test_filters(routing_config):
    assert ids(listed(routing_config, capability="embeddings")) == ["embedder"]
    assert ids(listed(routing_config, operation="embed")) == ["embedder"]
    assert "embedder" not in ids(listed(routing_config, operation="chat"))
    # provider: a name or a kind, of any deployment
    assert ids(listed(routing_config, provider="anthropic")) == ids(listed(routing_config, provider="p2"))
    assert "notools" not in ids(listed(routing_config, provider="p2")) and "with-tools" in ids(
        listed(routing_config, provider="anthropic")
    )
    # a deployment's own capabilities count for its alias
    assert ids(listed(routing_config, capability="tools")) == ["mixed", "split", "with-tools"]
    assert ids(listed(routing_config, model="cheap")) == ["cheap"]
    assert listed(routing_config, model="cheap", capability="embeddings") == []  # exists, filtered out
    with pytest.raises(ModelNotFound, match="'notools-2' does not exist or is not available to you"):
        listed(routing_config, "narrow", model="notools-2")


def test_what_each_model_says(routing_config):
    [m] = listed(routing_config, model="mixed")
    assert m.capabilities == ["chat", "stream", "tools"] and m.operations == ["chat"]
    assert (m.context_window, m.max_output_tokens, m.routing) == (8192, 4096, "weighted")
    [c] = listed(routing_config, model="cheap")
    assert c.routing == "cheapest"
    assert [(d.provider, d.model, d.price.input_per_mtok) for d in c.deployments] == [
        ("p1", "pricey", 1.0),
        ("p2", "small", 0.1),
        ("p1", "mid", 0.5),
        ("p2", "mid-too", 0.9),
    ]
    assert c.price == c.deployments[0].price and c.usable and all(d.usable for d in c.deployments)
    per_unit = ModelConfig.model_validate(
        {
            "capabilities": ["embeddings"],
            "deployments": [{"provider": "p1", "model": "e", "price": {"per_unit": {"inputs": 0.001}}}],
        }
    )
    [e] = listed(routing_config, catalog={"priced": per_unit})
    assert e.price.per_unit == {"inputs": 0.001}


def test_usable_and_ttft_come_from_the_routing_statistics(routing_config):
    s = RoutingStats(clock=lambda: NOW)
    s.success(("fast", "p1", "quick"), NOW - 9, streamed=True, ms=25.0)
    for i in range(3):
        s.failure(("fast", "p1", "slow"), NOW - 5 + i)
        s.failure(("notools", "p1", "nt"), NOW - 5 + i)
    [f] = listed(routing_config, health=s.health, model="fast")
    assert [(d.model, d.usable, d.ttft_ms_avg) for d in f.deployments] == [
        ("slow", False, None),
        ("quick", True, 25.0),
        ("new", True, None),
    ]
    assert f.usable
    [n] = listed(routing_config, health=s.health, model="notools")
    assert not n.usable and not n.deployments[0].usable

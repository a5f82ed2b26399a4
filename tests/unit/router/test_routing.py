"""Routing choices: weighted / cheapest / fastest orders, unusable deployments last, only
deployments with every needed capability, fallback aliases that cannot serve skipped."""

from __future__ import annotations

import random

import pytest

from services.contracts.errors import CapabilityNotSupported, ModelNotFound
from services.contracts.events import EmbedRequested
from services.router.handlers import needed_capabilities, plan
from services.router.stats import RoutingStats
from services.runtime.config import ModelConfig

from .conftest import TOOLS, chat

NOW = 1_000_000.0
IMAGE = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]


def models(p) -> list[tuple[str, str]]:
    return [(d.alias, d.upstream_model) for d in p.deployments]


def upstreams(p) -> list[str]:
    return [d.upstream_model for d in p.deployments]


def stats_with(*, failures=(), ttft=(), response=()) -> RoutingStats:
    s = RoutingStats(clock=lambda: NOW)
    for key, ms in ttft:
        s.success(key, NOW - 20, streamed=True, ms=ms)
    for key, ms in response:
        s.success(key, NOW - 20, streamed=False, ms=ms)
    for key in failures:  # the latest outcomes
        for i in range(3):
            s.failure(key, NOW - 10 + i)
    return s


def test_weighted_draws_the_first_by_weight_and_keeps_the_rest_in_order(routing_config):
    orders = {
        tuple(upstreams(plan(chat("weighted"), routing_config, rng=random.Random(i)))) for i in range(30)
    }
    assert orders == {("m-b", "m-a", "m-c")}  # weight 1000 against 1 + 1
    even = ModelConfig.model_validate(
        {
            "deployments": [
                {"provider": "p1", "model": "m-a"},
                {"provider": "p1", "model": "m-b"},
                {"provider": "p2", "model": "m-c"},
            ]
        }
    )
    firsts = {
        upstreams(plan(chat("weighted"), routing_config, catalog={"weighted": even}, rng=random.Random(i)))[0]
        for i in range(60)
    }
    assert firsts == {"m-a", "m-b", "m-c"}


def test_cheapest_orders_by_input_plus_output_price_ties_in_configuration_order(routing_config):
    assert upstreams(plan(chat("cheap"), routing_config)) == ["small", "mid", "mid-too", "pricey"]


def test_unusable_deployments_go_last_whatever_the_routing(routing_config):
    s = stats_with(failures=[("cheap", "p2", "small"), ("weighted", "p1", "m-b")])
    assert upstreams(plan(chat("cheap"), routing_config, stats=s)) == ["mid", "mid-too", "pricey", "small"]
    orders = {
        tuple(upstreams(plan(chat("weighted"), routing_config, stats=s, rng=random.Random(i))))
        for i in range(30)
    }
    assert all(o[-1] == "m-b" for o in orders) and {o[0] for o in orders} == {"m-a", "m-c"}


def test_fastest_orders_by_the_average_of_the_requests_kind_unmeasured_first(routing_config):
    s = stats_with(
        ttft=[(("fast", "p1", "slow"), 300.0), (("fast", "p1", "quick"), 20.0)],
        response=[
            (("fast", "p1", "slow"), 50.0),
            (("fast", "p1", "quick"), 900.0),
            (("fast", "p2", "new"), 70.0),
        ],
    )
    # streamed: by time to first token; "new" has none yet, so it is tried (measured) first
    assert upstreams(plan(chat("fast", stream=True), routing_config, stats=s)) == ["new", "quick", "slow"]
    # whole answers: by their own average, which every deployment has here
    assert upstreams(plan(chat("fast"), routing_config, stats=s)) == ["slow", "new", "quick"]
    # without statistics: configuration order
    assert upstreams(plan(chat("fast", stream=True), routing_config)) == ["slow", "quick", "new"]


def test_fastest_puts_a_failing_fast_deployment_last(routing_config):
    s = stats_with(
        ttft=[
            (("fast", "p1", "slow"), 300.0),
            (("fast", "p1", "quick"), 20.0),
            (("fast", "p2", "new"), 100.0),
        ],
        failures=[("fast", "p1", "quick")],
    )
    assert upstreams(plan(chat("fast", stream=True), routing_config, stats=s)) == ["new", "slow", "quick"]


def test_only_deployments_with_every_needed_capability(routing_config):
    assert sorted(upstreams(plan(chat("mixed"), routing_config))) == ["plain", "tooled"]
    assert upstreams(plan(chat("mixed", params={"tools": TOOLS}), routing_config)) == ["tooled"]
    with pytest.raises(
        CapabilityNotSupported, match=r"'split' has no deployment with every capability .*tools, vision"
    ):
        plan(
            chat("split", params={"tools": TOOLS}, messages=[{"role": "user", "content": IMAGE}]),
            routing_config,
        )
    assert upstreams(plan(chat("split", params={"tools": TOOLS}), routing_config)) == ["t"]


def test_fallbacks_lacking_a_needed_capability_are_skipped(routing_config):
    p = plan(chat("with-tools", params={"tools": TOOLS}, fallbacks=["notools", "mixed"]), routing_config)
    assert models(p) == [("with-tools", "wt"), ("mixed", "tooled")]
    # the requested model itself lacking it: the fallbacks that have it serve
    p = plan(chat("notools", params={"tools": TOOLS}, fallbacks=["notools-2", "with-tools"]), routing_config)
    assert models(p) == [("with-tools", "wt")]


def test_no_candidate_at_all_names_the_requested_model_and_the_capability(routing_config):
    with pytest.raises(
        CapabilityNotSupported, match=r"model 'notools' does not support tools \(capability 'tools'\)"
    ):
        plan(chat("notools", params={"tools": TOOLS}, fallbacks=["notools-2"]), routing_config)
    with pytest.raises(CapabilityNotSupported, match="'notools' does not support image input"):
        plan(chat("notools", messages=[{"role": "user", "content": IMAGE}]), routing_config)
    embed = EmbedRequested(request_id="e", tenant_id="t", model="notools", input=["x"], fallbacks=["mixed"])
    with pytest.raises(CapabilityNotSupported, match="'notools' does not support embeddings"):
        plan(embed, routing_config)
    embed = EmbedRequested(
        request_id="e", tenant_id="t", model="notools", input=["x"], fallbacks=["embedder"]
    )
    assert models(plan(embed, routing_config)) == [("embedder", "e")]


def test_needed_capabilities_are_what_the_request_uses():
    assert list(needed_capabilities(chat("m"))) == ["chat"]
    req = chat(
        "m",
        stream=True,
        params={"tools": TOOLS, "response_format": {"type": "json_schema"}},
        messages=[{"role": "user", "content": IMAGE}],
    )
    assert list(needed_capabilities(req)) == ["chat", "stream", "tools", "json_schema", "vision"]
    assert list(
        needed_capabilities(EmbedRequested(request_id="e", tenant_id="t", model="m", input=["x"]))
    ) == ["embeddings"]


def test_the_catalog_passed_in_is_what_plans_resolve_against(routing_config):
    extra = ModelConfig.model_validate({"deployments": [{"provider": "p2", "model": "from-registry"}]})
    catalog = {"only-in-registry": extra}
    assert models(plan(chat("only-in-registry"), routing_config, catalog=catalog)) == [
        ("only-in-registry", "from-registry")
    ]
    with pytest.raises(ModelNotFound, match="'cheap' does not exist; available: only-in-registry"):
        plan(chat("cheap"), routing_config, catalog=catalog)

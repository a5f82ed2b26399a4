"""The router's part of a provider batch (``batch.run``): admitted like one request (the tenant's
models, its rate limits with the batch's tokens, its budgets with the batch's worst case at the
batch discount), planned on the alias's deployments whose provider has a batch API of a fitting
kind, under the batch's completion window; its items' usage settles once, the run's releases the
reservation, and neither moves the routing statistics."""

from __future__ import annotations

import calendar

import orjson
import pytest
import yaml

from services.contracts.errors import BudgetExceeded, CapabilityNotSupported, ModelNotApproved, RateLimited
from services.contracts.events import BatchRunRequested, Usage
from services.router.admission import Governor, max_cost, prompt_bound
from services.router.handlers import BATCH_GRACE_S, plan
from services.router.ledger import PartitionLedger
from services.router.stats import RoutingStats
from services.runtime.config import GatewayConfig
from services.runtime.pricing import cost_usd

CONFIG = """
providers:
  oa: {kind: openai, base_url: "http://oa.invalid/v1", batch_api: true}
  an: {kind: anthropic, base_url: "http://an.invalid", batch_api: true}
  plain: {kind: openai, base_url: "http://plain.invalid/v1"}
  local: {kind: ollama, base_url: "http://local.invalid"}
models:
  gpt:
    deployments:
      - {provider: plain, model: g0, price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}
      - {provider: oa, model: g1, price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}
  claude:
    deployments: [{provider: an, model: c1, price: {input_per_mtok: 3.0, output_per_mtok: 15.0}}]
  emb:
    capabilities: [embeddings]
    deployments: [{provider: oa, model: e1, price: {input_per_mtok: 0.5}}]
  llama:
    deployments: [{provider: local, model: l1}]
tenants:
  t: {}
  narrow: {allowed_models: [gpt]}
  limited:
    limits: {requests_per_min: 2, tokens_per_min: 5000}
  budgeted:
    budgets: [{period: day, usd: 0.01}]
"""
DAY = calendar.timegm((2026, 11, 24, 12, 0, 0))


@pytest.fixture(scope="module")
def config() -> GatewayConfig:
    return GatewayConfig.model_validate(yaml.safe_load(CONFIG))


def run(
    model: str = "gpt", tenant: str = "t", endpoint: str = "/v1/chat/completions", **kw
) -> BatchRunRequested:
    return BatchRunRequested(
        request_id=kw.pop("request_id", f"b-{model}.run"),
        tenant_id=tenant,
        model=model,
        job=True,
        batch_id=f"b-{model}",
        endpoint=endpoint,
        requests_key="k",
        total=10,
        **kw,
    )


def test_a_run_is_planned_on_the_deployments_with_a_batch_api_under_its_completion_window(config):
    p = plan(run(), config)
    assert [(d.provider, d.upstream_model) for d in p.deployments] == [("oa", "g1")]
    assert p.total_ms == int((config.batches.completion_window_s + BATCH_GRACE_S) * 1000)
    assert p.total_ms > 24 * 3600 * 1000 > config.defaults.total_ms
    assert [d.provider for d in plan(run("claude", endpoint="/v1/messages"), config).deployments] == ["an"]
    assert [d.provider for d in plan(run("emb", endpoint="/v1/embeddings"), config).deployments] == ["oa"]


def test_a_run_no_batch_api_can_take_is_not_supported(config):
    with pytest.raises(CapabilityNotSupported, match="batch API"):
        plan(run("llama"), config)
    with pytest.raises(CapabilityNotSupported):  # embeddings: the alias has no such capability
        plan(run("claude", endpoint="/v1/embeddings"), config)


def test_a_run_needs_its_model_allowed_for_the_tenant(config):
    plan(run("gpt", tenant="narrow"), config)
    with pytest.raises(ModelNotApproved):
        plan(run("claude", tenant="narrow"), config)


def test_a_runs_worst_case_is_its_tokens_at_the_batch_discount(config):
    req = run(prompt_tokens=4000, max_output_tokens=1000)
    p = plan(req, config)
    worst = max_cost(req, p, config.models, prompt_bound(req))
    dep = config.models["gpt"].deployments[1]
    full = cost_usd(Usage(prompt_tokens=4000, completion_tokens=1000, total_tokens=5000), dep)
    assert worst == pytest.approx(full / 2) and worst > 0


def test_rate_limits_count_a_run_as_one_request_of_its_tokens(config):
    gov = Governor(config, lambda: config.models)
    ledger = PartitionLedger(0, gov.tenants)
    first = run(tenant="limited", prompt_tokens=3000, max_output_tokens=1000, request_id="r1")
    grant = gov.admit(first, plan(first, config), ledger, DAY)
    assert grant is not None and grant.record is not None and grant.record.tokens == 4000
    second = run(tenant="limited", prompt_tokens=500, max_output_tokens=600, request_id="r2")
    with pytest.raises(RateLimited):  # 4000 + 1100 tokens > 5000 a minute
        gov.admit(second, plan(second, config), ledger, DAY + 1)


def test_items_spend_once_and_the_runs_usage_releases_its_reservation(config):
    gov = Governor(config, lambda: config.models)
    ledger = PartitionLedger(0, gov.tenants)
    req = run(tenant="budgeted", prompt_tokens=2_000_000, max_output_tokens=1_000_000, request_id="big.run")
    with pytest.raises(BudgetExceeded):
        gov.admit(req, plan(req, config), ledger, DAY)
    req = run(tenant="budgeted", prompt_tokens=2000, max_output_tokens=1000, request_id="b.run")
    grant = gov.admit(req, plan(req, config), ledger, DAY)
    assert grant is not None and grant.record is not None and grant.record.cost_usd > 0
    t = ledger.tenant("budgeted")
    assert t is not None
    day = ("tenant", "day:2026-11-24")
    assert t.reserved[day] == pytest.approx(grant.record.cost_usd)
    for i in range(3):  # each item's usage (no admission of its own), one of them twice
        for _ in range(2 if i == 0 else 1):
            doc = {"request_id": f"b.{i}", "tenant_id": "budgeted", "total_tokens": 10, "cost_usd": 0.001}
            ledger.apply_usage(doc, i, DAY + 10)
    run_usage = {"request_id": "b.run", "tenant_id": "budgeted", "total_tokens": 0, "cost_usd": 0.0}
    ledger.apply_usage(run_usage, 9, DAY + 11)
    t.tick(DAY + 12)
    assert t.spent[day] == pytest.approx(0.003) and t.reserved.get(day, 0.0) == pytest.approx(0.0)


def test_a_provider_batchs_records_do_not_move_the_routing_statistics(config):
    stats = RoutingStats()

    def resolve(alias, provider, model):
        return (alias, provider, model)

    run_usage = {
        "alias": "gpt",
        "provider": "oa",
        "model": "g1",
        "status": "ok",
        "operation": "batch.run",
        "total_ms": 3_600_000.0,
    }
    item = {
        "alias": "gpt",
        "provider": "oa",
        "model": "g1",
        "status": "error",
        "error_code": "provider_error",
        "operation": "chat",
        "batch_id": "b",
        "total_ms": None,
    }
    call = {**item, "batch_id": "b", "total_ms": 120.0, "status": "ok", "error_code": None}
    assert not stats.observe(orjson.dumps(run_usage), DAY * 1000, resolve)
    assert not stats.observe(orjson.dumps(item), DAY * 1000, resolve)
    assert stats.observe(orjson.dumps(call), DAY * 1000, resolve)  # an item run as a request is a call

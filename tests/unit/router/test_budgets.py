"""Budgets: the worst-case reservation priced like its usage, settlement, periods, scopes, 402."""

from __future__ import annotations

import calendar

import pytest
import yaml

from services.contracts.errors import BudgetExceeded
from services.contracts.events import ChatRequested, EmbedRequested, Usage
from services.router.admission import Governor, max_cost, prompt_bound
from services.router.budgets import period_start, periods
from services.router.handlers import plan
from services.router.ledger import PartitionLedger
from services.runtime.config import ConfigError, GatewayConfig
from services.runtime.pricing import cost_usd

CONFIG = """
providers: {p: {kind: openai, base_url: "http://p.invalid/v1"}}
models:
  cheap:
    max_output_tokens: 1000
    deployments: [{provider: p, model: c1, price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}]
  dear:
    max_output_tokens: 500
    deployments: [{provider: p, model: d1, price: {input_per_mtok: 10.0, output_per_mtok: 40.0}}]
  emb:
    capabilities: [embeddings]
    deployments: [{provider: p, model: e1, price: {input_per_mtok: 1.0, per_unit: {inputs: 0.001}}}]
tenants:
  b:
    api_keys:
      - {name: k1, user: u0, sha256: "0000000000000000000000000000000000000000000000000000000000000000"}
    budgets:
      - {period: day, usd: 0.01}
      - {period: month, usd: 0.002, per: user, overrides: {rich: 1.0}}
      - {period: day, usd: 0.005, per: key}
"""

DAY = calendar.timegm((2026, 11, 24, 12, 0, 0))


@pytest.fixture(scope="module")
def config() -> GatewayConfig:
    return GatewayConfig.model_validate(yaml.safe_load(CONFIG))


@pytest.fixture
def gov(config):
    return Governor(config, lambda: config.models)


@pytest.fixture
def ledger(gov):
    return PartitionLedger(0, gov.tenants)


def chat(
    rid: str, model: str = "cheap", user: str | None = "rich", max_tokens: int | None = 100, **kw
) -> ChatRequested:
    params = {"max_tokens": max_tokens} if max_tokens else {}
    base = {
        "request_id": rid,
        "tenant_id": "b",
        "user_id": user,
        "model": model,
        "messages": [{"role": "user", "content": "hello there"}],
        "params": params,
    }
    return ChatRequested.model_validate(base | kw)


def admit(gov, ledger, config, req, now=DAY):
    return gov.admit(req, plan(req, config), ledger, now)


def settle(ledger, rid, cost, user="rich", at=DAY):
    ledger.apply_usage(
        {"request_id": rid, "tenant_id": "b", "user_id": user, "total_tokens": 1, "cost_usd": cost}, 0, at
    )


def test_the_reservation_is_the_worst_case_priced_by_the_usage_price_function(config):
    req = chat("r", max_tokens=100)
    bound = prompt_bound(req)
    dep = config.models["cheap"].deployments[0]
    expected = cost_usd(Usage(prompt_tokens=bound, completion_tokens=100), dep)
    assert max_cost(req, plan(req, config), config.models, bound) == expected
    # the bound is no less than what any byte-level tokenizer (and the emulator) counts
    assert bound >= len(b"hello there") + 3


def test_without_max_tokens_the_model_maximum_is_reserved_and_fallbacks_take_the_dearest(config):
    req = chat("r", max_tokens=None, fallbacks=["dear"])
    bound = prompt_bound(req)
    worst = max(
        cost_usd(Usage(prompt_tokens=bound, completion_tokens=1000), config.models["cheap"].deployments[0]),
        cost_usd(Usage(prompt_tokens=bound, completion_tokens=500), config.models["dear"].deployments[0]),
    )
    assert max_cost(req, plan(req, config), config.models, bound) == worst


def test_embeddings_reserve_their_inputs_and_units(config):
    req = EmbedRequested(request_id="e", tenant_id="b", model="emb", input=["abc", "de"])
    assert max_cost(req, plan(req, config), config.models, prompt_bound(req)) == pytest.approx(5e-6 + 0.002)


def test_budget_exceeded_names_the_remaining_amount(gov, ledger, config):
    """Tenant: USD 0.01 a day. Each request reserves ~0.0002 (100 output tokens at 2/M)."""
    one = admit(gov, ledger, config, chat("r0")).record.cost_usd
    n = 1
    with pytest.raises(BudgetExceeded) as exc:
        while True:
            admit(gov, ledger, config, chat(f"r{n}"))
            n += 1
    assert n == int(0.01 // one)
    d = exc.value.details
    assert d["scope"] == "tenant" and d["period"] == "day:2026-11-24" and d["budget_usd"] == 0.01
    assert d["remaining_usd"] == pytest.approx(0.01 - n * one) and d["remaining_usd"] < one
    assert "USD 0.01" in exc.value.message and "left" in exc.value.message
    assert exc.value.http_status == 402


def test_settlement_releases_the_reservation_and_spends_the_actual(gov, ledger, config):
    first = admit(gov, ledger, config, chat("a"))
    t = ledger.tenant("b")
    assert t.reserved[("tenant", "day:2026-11-24")] == pytest.approx(first.record.cost_usd)
    settle(ledger, "a", 0.00001)
    assert t.reserved[("tenant", "day:2026-11-24")] == pytest.approx(0.0)
    assert t.spent[("tenant", "day:2026-11-24")] == pytest.approx(0.00001)
    assert t.spent[("user:rich", "month:2026-11")] == pytest.approx(0.00001)
    settle(ledger, "a", 0.00001)  # the same usage again: spent once
    assert t.spent[("tenant", "day:2026-11-24")] == pytest.approx(0.00001)


def test_user_and_key_budgets_with_overrides(gov, ledger, config):
    """Users: USD 0.002 a month (rich: 1.0); keys: USD 0.005 a day."""
    with pytest.raises(BudgetExceeded) as exc:
        for i in range(20):
            admit(gov, ledger, config, chat(f"p{i}", user="poor"))
    assert exc.value.details["scope"] == "user:poor" and exc.value.details["period"] == "month:2026-11"
    with pytest.raises(BudgetExceeded) as exc:
        for i in range(40):
            admit(gov, ledger, config, chat(f"k{i}", user="rich", api_key="k1"))
    assert exc.value.details["scope"] == "key:k1"


def test_a_new_day_is_a_new_budget(gov, ledger, config):
    with pytest.raises(BudgetExceeded):
        for i in range(100):
            admit(gov, ledger, config, chat(f"d{i}"))
    for i in range(100):
        settle(ledger, f"d{i}", 0.0002)
    tomorrow = DAY + 86400
    ledger.tenant("b").tick(tomorrow)
    assert admit(gov, ledger, config, chat("next"), tomorrow) is not None
    assert periods(DAY) == ("day:2026-11-24", "month:2026-11")
    assert period_start("day", DAY) == DAY - 12 * 3600
    assert period_start("month", DAY) == calendar.timegm((2026, 11, 1, 0, 0, 0))


def test_usage_without_a_known_admission_is_still_spent(gov, ledger, config):
    settle(ledger, "unknown", 0.009)
    with pytest.raises(BudgetExceeded):
        admit(gov, ledger, config, chat("x", max_tokens=1000))


def test_lapsed_reservations_are_released(gov, ledger, config):
    g = admit(gov, ledger, config, chat("lost"))
    t = ledger.tenant("b")
    until = g.record.until.timestamp()
    t.tick(until - 1)
    assert t.reserved.get(("tenant", "day:2026-11-24"), 0) > 0
    t.tick(until)
    assert t.reserved.get(("tenant", "day:2026-11-24"), 0) == 0 and "lost" not in t.open


def test_limits_and_budgets_may_only_name_keys_the_tenant_has():
    doc = yaml.safe_load(CONFIG)
    doc["tenants"]["b"]["budgets"].append(
        {"period": "day", "usd": 1, "per": "key", "overrides": {"nokey": 2}}
    )
    with pytest.raises(ValueError, match="nokey"):
        GatewayConfig.model_validate(doc)
    assert issubclass(ConfigError, ValueError)

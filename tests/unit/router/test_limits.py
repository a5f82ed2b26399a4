"""Rate limits: the sliding minute's edges, each scope, the binding numbers, Retry-After."""

from __future__ import annotations

import math

import pytest
import yaml

from services.contracts.errors import RateLimited
from services.contracts.events import ChatRequested, ExecutionPlanned
from services.router.admission import Governor, prompt_bound
from services.router.handlers import plan
from services.router.ledger import PartitionLedger
from services.router.limits import WINDOW_S, Scope, Window, check
from services.runtime.config import GatewayConfig, Rate

CONFIG = """
providers: {p: {kind: openai, base_url: "http://p.invalid/v1"}}
models:
  m:
    max_output_tokens: 1000
    deployments: [{provider: p, model: m1, price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}]
tenants:
  open: {}
  lim:
    api_keys:
      - {name: ci key, user: u0, sha256: "0000000000000000000000000000000000000000000000000000000000000000"}
    limits:
      requests_per_min: 5
      tokens_per_min: 2000
      per_user: {requests_per_min: 3}
      users: {vip: {requests_per_min: 10}}
      keys: {ci key: {requests_per_min: 2}}
      per_client: {tokens_per_min: 300}
      output_tokens: 50
"""


@pytest.fixture(scope="module")
def config() -> GatewayConfig:
    return GatewayConfig.model_validate(yaml.safe_load(CONFIG))


@pytest.fixture
def gov(config):
    return Governor(config, lambda: config.models)


@pytest.fixture
def ledger(gov):
    return PartitionLedger(0, gov.tenants)


class Clock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t


def chat(rid: str, tenant: str = "lim", user: str | None = "u1", **kw) -> ChatRequested:
    base = {
        "request_id": rid,
        "tenant_id": tenant,
        "user_id": user,
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "params": {"max_tokens": 10},
    }
    return ChatRequested.model_validate(base | kw)


def admit(gov, ledger, config, req: ChatRequested, now: float):
    p: ExecutionPlanned = plan(req, config)
    return gov.admit(req, p, ledger, now)


def test_an_ungoverned_tenant_costs_nothing(gov, ledger, config):
    assert admit(gov, ledger, config, chat("r", tenant="open"), 0.0) is None
    assert ledger.tenants == {}


def test_the_window_is_a_sliding_minute_to_the_edge(gov, ledger, config):
    """Per user 3 a minute: the 4th waits until the first is exactly 60 s old."""
    t0 = 1000.0
    for i in range(3):
        admit(gov, ledger, config, chat(f"r{i}"), t0 + i)
    with pytest.raises(RateLimited) as exc:
        admit(gov, ledger, config, chat("r3"), t0 + 59.999)
    assert exc.value.details["scope"] == "user u1"
    assert exc.value.details["retry_after_s"] == pytest.approx(0.001, abs=1e-6)
    assert "3 requests per minute" in exc.value.message
    # at t0 + 60 the first left the window (it counts while now < t + 60)
    grant = admit(gov, ledger, config, chat("r3"), t0 + 60.0)
    assert grant is not None and grant.ratelimit.remaining_requests == 0


def test_refused_requests_count_nowhere(gov, ledger, config):
    for i in range(3):
        admit(gov, ledger, config, chat(f"a{i}", user="u1"), 10.0)
    for i in range(5):
        with pytest.raises(RateLimited):
            admit(gov, ledger, config, chat(f"b{i}", user="u1"), 11.0)
    # the tenant's 5 a minute: two more from another user still fit, then the tenant binds
    admit(gov, ledger, config, chat("c0", user="u2"), 12.0)
    admit(gov, ledger, config, chat("c1", user="u2"), 12.0)
    with pytest.raises(RateLimited) as exc:
        admit(gov, ledger, config, chat("c2", user="u3"), 12.0)
    assert exc.value.details["scope"] == "tenant lim"


def test_named_overrides_replace_the_per_scope_default(gov, ledger, config):
    for i in range(5):
        admit(gov, ledger, config, chat(f"v{i}", user="vip"), 1.0)  # 10 for vip, the tenant's 5 bind
    with pytest.raises(RateLimited, match="tenant lim"):
        admit(gov, ledger, config, chat("v5", user="vip"), 1.0)


def test_the_api_key_scope(gov, ledger, config):
    admit(gov, ledger, config, chat("k0", user="u1", api_key="ci key"), 1.0)
    admit(gov, ledger, config, chat("k1", user="u2", api_key="ci key"), 1.0)
    with pytest.raises(RateLimited) as exc:
        admit(gov, ledger, config, chat("k2", user="u3", api_key="ci key"), 1.0)
    assert exc.value.details["scope"] == "key 'ci key'"


def test_tokens_are_reserved_then_settled(gov, ledger, config):
    """client_id svc: 300 tokens a minute. A request reserves its prompt bound + max_tokens;
    its usage replaces the reservation with what was used."""
    req = chat("t0", user=None, client_id="svc", params={"max_tokens": 200})
    reserve = prompt_bound(req) + 200
    admit(gov, ledger, config, req, 1.0)
    with pytest.raises(RateLimited) as exc:
        admit(gov, ledger, config, chat("t1", user=None, client_id="svc", params={"max_tokens": 200}), 2.0)
    assert exc.value.details["scope"] == "client_id svc"
    assert exc.value.details["retry_after_s"] == pytest.approx(59.0)
    ledger.apply_usage({"request_id": "t0", "tenant_id": "lim", "total_tokens": 20, "cost_usd": 0.0}, 0, 2.5)
    grant = admit(
        gov, ledger, config, chat("t1", user=None, client_id="svc", params={"max_tokens": 200}), 3.0
    )
    assert grant.record.tokens == reserve
    assert grant.ratelimit.limit_tokens == 300 and grant.ratelimit.remaining_tokens == 300 - 20 - reserve


def test_default_output_estimate_without_max_tokens(gov, ledger, config):
    req = chat("d0", params={})
    grant = admit(gov, ledger, config, req, 1.0)
    assert grant.record.tokens == prompt_bound(req) + 50  # limits.output_tokens


def test_a_request_that_can_never_fit_says_so(gov, ledger, config):
    with pytest.raises(RateLimited) as exc:
        admit(gov, ledger, config, chat("big", user=None, client_id="svc", params={"max_tokens": 999}), 1.0)
    assert exc.value.details["retry_after_s"] is None and "alone reserves" in exc.value.message


def test_a_redelivered_request_is_counted_once(gov, ledger, config):
    first = admit(gov, ledger, config, chat("same"), 1.0)
    again = admit(gov, ledger, config, chat("same"), 2.0)
    assert first.record is not None and again.record is None
    assert ledger.tenant("lim").window("user:u1").requests == 1


def test_binding_numbers_are_the_least_remaining_scope(gov, ledger, config):
    g = admit(gov, ledger, config, chat("b0", user="u1"), 100.0)
    # user u1: 3 - 1 = 2 left; tenant: 5 - 1 = 4 left -> the user binds requests
    assert (g.ratelimit.limit_requests, g.ratelimit.remaining_requests) == (3, 2)
    assert g.ratelimit.reset_requests_s == WINDOW_S  # the window holds only this request
    g = admit(gov, ledger, config, chat("b1", user="u1"), 110.0)
    assert g.ratelimit.remaining_requests == 1 and g.ratelimit.reset_requests_s == pytest.approx(50.0)
    assert g.ratelimit.limit_tokens == 2000


def test_window_waits():
    w = Window()

    class E:
        def __init__(self, at, tokens):
            self.at, self.tokens = at, tokens

    for at, tok in ((0.0, 100), (10.0, 300), (20.0, 50)):
        w.add(E(at, tok))
    assert w.wait_for_request(3, 30.0) == pytest.approx(30.0)  # the oldest leaves at 60
    assert w.wait_for_request(2, 30.0) == pytest.approx(40.0)  # two must leave: the second at 70
    assert w.wait_for_request(0, 30.0) == math.inf
    # 450 in the window, limit 500, 200 more: 150 must leave -> the first two (at 70)
    assert w.wait_for_tokens(200, 500, 30.0) == pytest.approx(40.0)
    assert w.wait_for_tokens(600, 500, 30.0) == math.inf
    with pytest.raises(RateLimited):
        check([Scope("s", Rate(requests_per_min=3), w)], 0, 30.0)

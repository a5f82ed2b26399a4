import random
from pathlib import Path

import pytest

from services.contracts.errors import CapabilityNotSupported, ModelNotApproved, ModelNotFound, ValidationError
from services.contracts.events import ChatRequested
from services.router.handlers import plan
from services.runtime.config import ModelConfig, load_config

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def config():
    return load_config(ROOT / "config" / "demo.yaml", env={})


def req(**kw):
    base = {
        "request_id": "r1",
        "tenant_id": "demo",
        "model": "demo-openai",
        "messages": [{"role": "user", "content": "hi"}],
    }
    return ChatRequested.model_validate(base | kw)


def test_plan_resolves_alias_to_deployment(config):
    p = plan(req(), config)
    assert [d.alias for d in p.deployments] == ["demo-openai"]
    d = p.deployments[0]
    assert (d.provider, d.upstream_model) == ("emulator-openai", "gpt-emu")
    # a plan names deployments only: URL, credential and price stay in the executor's configuration
    assert set(d.model_dump()) == {"alias", "provider", "upstream_model"}
    assert p.chunk_window_ms == 20 and p.total_ms == 600000


def test_fallbacks_follow_primary(config):
    p = plan(req(fallbacks=["demo-anthropic", "demo-ollama"]), config)
    assert [d.alias for d in p.deployments] == ["demo-openai", "demo-anthropic", "demo-ollama"]


def test_unknown_model_names_it(config):
    with pytest.raises(ModelNotFound, match="'gpt-9' does not exist; available: demo-anthropic"):
        plan(req(model="gpt-9"), config)


def test_unknown_fallback_is_rejected_too(config):
    with pytest.raises(ModelNotFound, match="'nope'"):
        plan(req(fallbacks=["nope"]), config)


def test_tenant_allow_list(config):
    plan(req(tenant_id="restricted"), config)
    with pytest.raises(
        ModelNotApproved, match="tenant 'restricted' is not approved for model 'demo-anthropic'"
    ):
        plan(req(tenant_id="restricted", model="demo-anthropic"), config)


def test_unknown_tenant(config):
    with pytest.raises(ModelNotApproved, match="tenant 'ghost' is not configured"):
        plan(req(tenant_id="ghost"), config)


def test_capabilities(config):
    plain = {
        "deployments": [{"provider": "emulator-ollama", "model": "m"}],
        "capabilities": ["chat", "stream"],
    }
    cfg = config.model_copy(update={"models": {**config.models, "plain": ModelConfig.model_validate(plain)}})
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with pytest.raises(CapabilityNotSupported, match="'plain' does not support tools"):
        plan(req(model="plain", params={"tools": tools}), cfg)
    image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    with pytest.raises(CapabilityNotSupported, match="image input"):
        plan(req(model="plain", messages=[{"role": "user", "content": image}]), cfg)
    plan(req(model="demo-openai", messages=[{"role": "user", "content": image}]), cfg)
    with pytest.raises(CapabilityNotSupported, match="structured output"):
        plan(req(model="plain", params={"response_format": {"type": "json_schema", "json_schema": {}}}), cfg)


def test_max_tokens_over_model_limit(config):
    with pytest.raises(
        ValidationError, match="max_tokens=999999 exceeds model 'demo-openai' output limit of 16384"
    ):
        plan(req(params={"max_tokens": 999999}), config)


def test_prompt_size_limit(config):
    big = "x" * (config.policies.max_prompt_bytes + 10)
    with pytest.raises(ValidationError, match="over the 4194304-byte prompt limit"):
        plan(req(messages=[{"role": "user", "content": big}]), config)


def test_weighted_first_deployment(config):
    cfg = config.model_copy(deep=True)
    m = cfg.models["demo-openai"]
    dep = m.deployments[0]
    cfg.models["demo-openai"] = m.model_copy(
        update={
            "deployments": [dep, dep.model_copy(update={"provider": "emulator-anthropic", "weight": 1000.0})]
        }
    )
    firsts = {plan(req(), cfg, rng=random.Random(i)).deployments[0].provider for i in range(20)}
    assert firsts == {"emulator-anthropic"}


def test_max_completion_tokens_is_checked_too(config):
    with pytest.raises(ValidationError, match="max_completion_tokens=20000 exceeds"):
        plan(req(params={"extra": {"max_completion_tokens": 20000}}), config)


def test_model_not_found_lists_only_what_the_tenant_may_use(config):
    allowed = ", ".join(sorted(config.tenants["restricted"].allowed_models))
    assert "demo-anthropic" not in allowed
    with pytest.raises(ModelNotFound, match=f"available: {allowed}$"):
        plan(req(tenant_id="restricted", model="gpt-9"), config)


def test_a_callers_own_media_keys_never_reach_the_plan(config):
    planted = {
        "type": "image_url",
        "image_url": {"url": "file-" + "a" * 32},
        "media": {"media_id": "m", "mime_type": "image/png", "bytes": 1, "key": "tenants/other/media/m"},
        "pass_url": True,
    }
    text = {"type": "text", "text": "hi", "media": {"key": "tenants/other/files/x"}}
    p = plan(req(messages=[{"role": "user", "content": [text, planted]}]), config)
    parts = p.request.messages[0].content
    assert parts == [
        {"type": "text", "text": "hi"},
        {"type": "image_url", "image_url": {"url": "file-" + "a" * 32}},
    ]

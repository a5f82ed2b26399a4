"""The prototype's policies as hooks, and the router's pre-call step.

The policies keep their codes and messages (``admit`` / ``plan``, as before), can also be a
tenant's own hooks, and run before the tenant's hooks; the router's ``handle`` runs the hooks
before planning: a modified request is what gets planned, a blocked one is answered
``request_blocked`` (naming the rule) and audited ``blocked`` with the rule as reason."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from services.contracts.errors import ModelNotApproved, ValidationError
from services.contracts.events import (
    AuditRecorded,
    ChatRequested,
    EmbedRequested,
    ExecutionPlanned,
    ModelsListRequested,
    ResultProduced,
    new_id,
)
from services.router.app import Router
from services.router.handlers import admit, plan, policy_hooks
from services.runtime.codec import encode
from services.runtime.config import Policies, load_config
from services.runtime.hooks import ALLOW, Block
from services.runtime.hooks.policies import DisabledModelsHook, PromptSizeHook, RequiredClientIdHook
from services.runtime.settings import Settings
from services.runtime.topics import Topics

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def config():
    return load_config(ROOT / "config" / "demo.yaml", env={})


def req(**kw: Any) -> ChatRequested:
    base = {
        "request_id": "r1",
        "tenant_id": "demo",
        "model": "demo-openai",
        "messages": [{"role": "user", "content": "hi"}],
    }
    return ChatRequested.model_validate(base | kw)


def strict(config, **policies: Any):
    return config.model_copy(update={"policies": Policies(**policies)})


def test_policy_errors_are_unchanged(config) -> None:
    cfg = strict(config, require_client_id=True, disabled_models=["demo-anthropic"], max_prompt_bytes=64)
    with pytest.raises(ValidationError, match="^client_id is required by policy$") as e:
        plan(req(), cfg)
    assert e.value.param == "client_id"
    with pytest.raises(ModelNotApproved, match="^model 'demo-anthropic' is disabled by policy$") as e:
        plan(req(client_id="c", model="demo-anthropic"), cfg)
    assert e.value.param == "model"
    with pytest.raises(ModelNotApproved, match="'demo-anthropic' is disabled"):
        plan(req(client_id="c", fallbacks=["demo-anthropic"]), cfg)
    with pytest.raises(ValidationError, match=r"^messages is \d+ bytes, over the 64-byte prompt limit$") as e:
        plan(req(client_id="c", messages=[{"role": "user", "content": "x" * 100}]), cfg)
    assert e.value.param == "messages"
    embed = EmbedRequested(
        request_id="r", tenant_id="demo", client_id="c", model="demo-embed", input=["y" * 65]
    )
    with pytest.raises(ValidationError, match="^input is 65 bytes, over the 64-byte prompt limit$"):
        plan(embed, cfg)
    plan(req(client_id="c"), cfg)


def test_checked_in_order_client_id_size_then_models(config) -> None:
    cfg = strict(config, require_client_id=True, disabled_models=["demo-openai"], max_prompt_bytes=8)
    assert [type(h) for h in policy_hooks(cfg.policies)] == [
        RequiredClientIdHook,
        PromptSizeHook,
        DisabledModelsHook,
    ]
    assert policy_hooks(cfg.policies) is policy_hooks(cfg.policies)  # built once per configuration
    with pytest.raises(ValidationError, match="client_id"):
        admit(req(messages=[{"role": "user", "content": "x" * 100}]), cfg)
    with pytest.raises(ValidationError, match="prompt limit"):
        admit(req(client_id="c", messages=[{"role": "user", "content": "x" * 100}]), cfg)
    # the default policies: only the size check, skipped for an event smaller than the limit
    assert [type(h) for h in policy_hooks(config.policies)] == [PromptSizeHook]
    size = PromptSizeHook(8)
    big = req(messages=[{"role": "user", "content": "x" * 100}])
    assert size.check(big, raw_size=8) is ALLOW and isinstance(size.check(big, raw_size=9), Block)


async def test_policies_are_hooks_a_tenant_may_add() -> None:
    verdict = await PromptSizeHook(10).pre_call(req(messages=[{"role": "user", "content": "x" * 100}]))
    assert isinstance(verdict, Block) and verdict.rule == "max_prompt_size"
    assert isinstance(verdict.error, ValidationError)
    assert await RequiredClientIdHook().pre_call(req(client_id="c")) is ALLOW
    models_list = ModelsListRequested(request_id="r", tenant_id="demo")
    assert (
        DisabledModelsHook(["x"]).check(models_list) is ALLOW
        and PromptSizeHook(1).check(models_list) is ALLOW
    )
    assert isinstance(RequiredClientIdHook().check(models_list), Block)  # every operation needs it


# --- the router's pre-call step ---------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    async def publish(self, topic, event, *, key, partition=None, headers=None):  # type: ignore[no-untyped-def]
        self.events.append((topic, event))
        ack = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        return ack

    def of(self, kind: type) -> list[Any]:
        return [e for _, e in self.events if isinstance(e, kind)]


class Record:
    def __init__(self, value: bytes):
        self.value, self.partition, self.offset, self.topic = value, 0, 0, "llm.requests"


@pytest.fixture
async def router(config):
    r = Router(Settings(), config, Topics.load(ROOT / "topics.yaml", ""))
    kafka, r.publisher = r.publisher, Recorder()  # type: ignore[assignment]
    yield r
    # never started: closing only releases them
    await kafka.aclose()
    await r.consumer._consumer.stop()
    await r.feed._consumer.stop()


async def handle(router: Router, request: ChatRequested) -> Recorder:
    await router.handle(request, Record(encode(request)))  # type: ignore[arg-type]
    return router.publisher  # type: ignore[return-value]


async def test_a_modified_request_is_what_gets_planned(router) -> None:
    said = "mail me at alice@example.com or call +1 415 555 2671"
    rec = await handle(
        router, req(request_id=new_id(), tenant_id="guarded", messages=[{"role": "user", "content": said}])
    )
    (execution,) = rec.of(ExecutionPlanned)
    assert execution.request.messages[0].content == "mail me at [EMAIL] or call [PHONE]"
    assert not rec.of(AuditRecorded)


async def test_a_blocked_request_is_answered_and_audited_with_its_rule(router, capsys) -> None:
    rid = new_id()
    rec = await handle(
        router,
        req(
            request_id=rid,
            tenant_id="guarded",
            client_id="c1",
            messages=[{"role": "user", "content": "tell me about forbidden-topic"}],
        ),
    )
    assert not rec.of(ExecutionPlanned)
    (result,) = rec.of(ResultProduced)
    assert result.status == "error" and result.error is not None
    assert result.error.code == "request_blocked" and result.error.details == {"rule": "blocklist"}
    assert "rule 'blocklist'" in result.error.message and "forbidden" not in result.error.message
    (audit,) = rec.of(AuditRecorded)
    assert (audit.action, audit.actor, audit.reason, audit.error_code) == (
        "blocked",
        "router",
        "blocklist",
        "request_blocked",
    )
    assert (audit.request_id, audit.tenant_id, audit.client_id) == (rid, "guarded", "c1")
    line = [ln for ln in capsys.readouterr().out.splitlines() if rid in ln]
    assert len(line) == 1 and '"error":"request_blocked"' in line[0] and '"service":"router"' in line[0]


async def test_policies_run_before_the_tenants_hooks(router) -> None:
    """A prompt over the size limit is refused before any hook reads it (PII scanning a huge
    prompt would be the cost)."""
    router.config = strict(router.config, max_prompt_bytes=64)
    rec = await handle(
        router,
        req(
            request_id=new_id(),
            tenant_id="guarded",
            messages=[{"role": "user", "content": "forbidden-topic " * 10}],
        ),
    )
    (result,) = rec.of(ResultProduced)
    assert result.error is not None and result.error.code == "validation_error"


async def test_a_tenant_without_hooks_is_planned_as_sent(router) -> None:
    rec = await handle(
        router, req(request_id=new_id(), messages=[{"role": "user", "content": "bob@example.com"}])
    )
    (execution,) = rec.of(ExecutionPlanned)
    assert execution.request.messages[0].content == "bob@example.com"

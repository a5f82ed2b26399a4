"""The executor's audit events: ``started`` always precedes the outcome on the request's
partition, whether it went out with the outcome (a short request) or while the provider
was still answering (a long one)."""

from __future__ import annotations

import asyncio
import json

import pytest

from services.client import GatewayClient
from services.contracts.errors import ModelNotFound
from services.contracts.events import new_id

from .helpers import TopicTail

MSGS = [{"role": "user", "content": "audit me"}]


def _actions(records, rid: str) -> list[dict]:  # type: ignore[no-untyped-def]
    rows = [json.loads(r.value) for r in records if rid.encode() in r.value]
    return [r for r in rows if r.get("actor") == "executor"]


async def test_short_request_has_started_then_completed(gw, stack_settings):
    rid = new_id()
    async with TopicTail(
        stack_settings.bootstrap_servers, f"{stack_settings.topic_prefix}llm.audit"
    ) as audit:
        result = await gw.chat(model="demo-openai", messages=MSGS, request_id=rid)
        recs = await audit.until(lambda rs: len(_actions(rs, rid)) >= 2)
    assert result.status == "ok"
    events = _actions(recs, rid)
    assert [e["action"] for e in events] == ["started", "completed"]
    assert events[0]["occurred_at"] <= events[1]["occurred_at"]


async def test_long_request_announces_started_before_its_result(gw, stack_settings):
    rid = new_id()
    async with TopicTail(
        stack_settings.bootstrap_servers, f"{stack_settings.topic_prefix}llm.audit"
    ) as audit:
        call = gw.chat(model="demo-openai", messages=MSGS, request_id=rid, emulator_scenario="ttfb_ms=1500")
        task = asyncio.create_task(call)
        recs = await audit.until(lambda rs: len(_actions(rs, rid)) >= 1)
        assert not task.done()  # the provider is still answering
        assert [e["action"] for e in _actions(recs, rid)] == ["started"]
        result = await task
        recs = await audit.until(lambda rs: len(_actions(rs, rid)) >= 2)
    assert result.status == "ok"
    assert [e["action"] for e in _actions(recs, rid)] == ["started", "completed"]


async def test_audit_content_only_for_a_tenant_whose_policy_includes_it(gw, stack_settings):
    """Tenant ``audited`` (``audit.include_content: true``, PII redaction): its audit records carry
    the prompt as the gateway held it (redacted) and the answer; the router's rejections carry
    the prompt; tenant ``demo``'s records carry no text at all."""
    topic = f"{stack_settings.topic_prefix}llm.audit"
    said = "write to jane.doe@example.com about the plan"
    async with (
        GatewayClient(
            stack_settings.bootstrap_servers,
            "audited",
            "a-user",
            topic_prefix=stack_settings.topic_prefix,
            timeout_s=30,
        ) as audited,
        TopicTail(stack_settings.bootstrap_servers, topic) as audit,
    ):
        ok, missing, plain = new_id(), new_id(), new_id()
        result = await audited.chat(
            model="demo-openai",
            messages=[{"role": "user", "content": said}],
            request_id=ok,
            emulator_scenario="echo",
        )
        with pytest.raises(ModelNotFound):
            await audited.chat(
                model="no-such-model", messages=[{"role": "user", "content": said}], request_id=missing
            )
        await gw.chat(model="demo-openai", messages=[{"role": "user", "content": said}], request_id=plain)

        def rows(rs, rid):  # type: ignore[no-untyped-def]
            return [json.loads(r.value) for r in rs if rid.encode() in r.value]

        recs = await audit.until(
            lambda rs: len(rows(rs, ok)) >= 2 and rows(rs, missing) and len(rows(rs, plain)) >= 2
        )
    assert "jane.doe@example.com" not in result.message.content  # redacted before the provider
    by_action = {r["action"]: r for r in rows(recs, ok)}
    assert set(by_action) == {"started", "completed"}
    for r in by_action.values():
        (msg,) = r["content"]["messages"]
        assert msg["content"] == result.message.content and "jane.doe@example.com" not in msg["content"]
    assert by_action["completed"]["content"]["completion"] == result.message.content
    assert by_action["started"]["content"].get("completion") is None
    (refused,) = rows(recs, missing)
    assert refused["actor"] == "router"  # refused after the hooks: the text as they left it
    assert refused["content"]["messages"][0]["content"] == result.message.content
    for r in rows(recs, plain):
        assert r.get("content") is None and said.encode() not in json.dumps(r).encode()
    for r in [*rows(recs, ok), *rows(recs, missing)]:
        assert "jane.doe@example.com" not in json.dumps(r)

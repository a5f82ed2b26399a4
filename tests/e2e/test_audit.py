"""The executor's audit events: ``started`` always precedes the outcome on the request's
partition, whether it went out with the outcome (a short request) or while the provider
was still answering (a long one)."""

from __future__ import annotations

import asyncio
import json

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

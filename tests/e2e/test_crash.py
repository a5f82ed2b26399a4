"""A service killed mid-request loses no request: the other instance finishes it."""

from __future__ import annotations

import asyncio
import os
import signal

from services.contracts.events import new_id

from .helpers import TopicTail

MSGS = [{"role": "user", "content": "survive"}]


async def test_executor_killed_mid_request_loses_nothing(gw, stack, stack_settings):
    audit = f"{stack_settings.topic_prefix}llm.audit"
    ids = [new_id() for _ in range(24)]
    async with TopicTail(stack_settings.bootstrap_servers, audit) as tail:
        calls = [
            asyncio.create_task(
                gw.chat(
                    model="demo-openai",
                    messages=MSGS,
                    request_id=rid,
                    timeout_s=90,
                    emulator_scenario="ttfb_ms=2500",
                )
            )
            for rid in ids
        ]
        # every request is with an executor (started) and none is finished (the upstream waits 2.5 s)
        await tail.until(lambda rs: sum(b'"action":"started"' in r.value for r in rs) >= len(ids))
        victim = next(c for c in stack.load() if c.name == "executor-0")
        os.kill(victim.pid, signal.SIGKILL)
        results = await asyncio.gather(*calls)
        started = [r.value for r in tail.records if b'"action":"started"' in r.value]
    # the killed executor held some of them: those were started a second time, elsewhere
    assert len(started) > len(ids)
    assert [r.request_id for r in results] == ids
    assert all(r.status == "ok" and r.message.content for r in results)
    stack.restart("executor-0")

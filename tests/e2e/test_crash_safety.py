"""Executor crashes on the real stack: a SIGKILL mid-stream delivers the answer once (SDK and
OpenAI SSE through the edge); a plan redelivered after its outputs were published (the executor
died before committing it) is not sent to the provider again, and billed once. executor-1 is
stopped meanwhile, so executor-0 runs every plan and the fault lands on the one running it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator

import httpx
import openai
import orjson
from aiokafka.admin import AIOKafkaAdminClient

from services.cli.stack import Component, Stack, _alive
from services.contracts.events import UsageRecorded, new_id
from services.runtime.tail import Tail
from services.runtime.topics import Topics

from .helpers import TopicTail

DEMO_KEY = "sk-llmgw-demo"


@contextlib.asynccontextmanager
async def only_executor_0(stack: Stack) -> AsyncIterator[None]:
    await asyncio.to_thread(stack.stop, "executor-1")
    try:
        yield
    finally:
        await asyncio.to_thread(stack.restart, "executor-1")


def component(stack: Stack, name: str) -> Component:
    return next(c for c in stack.load() if c.name == name)


async def kill_and_restart(stack: Stack, name: str) -> None:
    pid = component(stack, name).pid
    assert pid
    os.kill(pid, signal.SIGKILL)
    await asyncio.to_thread(stack.restart, name)


def a_long_answer() -> str:
    """The emulator's ``echo`` answers the prompt, one piece per word: a known answer."""
    tag = new_id()[:8]
    return " ".join(f"w{i}-{tag}" for i in range(40))


SLOW_ECHO = "echo,chunk_delay_ms=60"  # 40 pieces: about 2.4 s of stream


async def test_executor_killed_mid_stream_the_sdk_assembles_the_answer_once(gw, stack, stack_settings):
    said, rid = a_long_answer(), new_id()
    async with only_executor_0(stack):
        assert gw.reply_to is not None
        async with TopicTail(
            stack_settings.bootstrap_servers, gw.reply_to.topic, gw.reply_to.partition
        ) as replies:
            got = []
            async for c in gw.stream_chat(
                model="demo-openai",
                messages=[{"role": "user", "content": said}],
                request_id=rid,
                timeout_s=120,
                emulator_scenario=SLOW_ECHO,
            ):
                got.append(c)
                if len(got) == 3:  # mid-stream: the executor dies, another run starts from seq 0
                    await kill_and_restart(stack, "executor-0")
            runs = {
                orjson.loads(r.value).get("run_id")
                for r in replies.records
                if r.key == rid.encode() and b'"llm.chunk.v1"' in r.value
            }
    assert "".join(c.delta.content or "" for c in got) == said
    assert [c.seq for c in got] == list(range(len(got))) and got[-1].final
    assert len(runs) == 2  # the stream was restarted, and the caller did not see it twice


async def test_executor_killed_mid_stream_an_openai_sse_client_gets_the_answer_once(stack, edge_url):
    said = a_long_answer()
    client = openai.AsyncOpenAI(api_key=DEMO_KEY, base_url=f"{edge_url}/v1", max_retries=0, timeout=120)
    async with only_executor_0(stack):
        stream = await client.chat.completions.create(
            model="demo-openai",
            messages=[{"role": "user", "content": said}],
            stream=True,
            extra_body={"emulator_scenario": SLOW_ECHO},
        )
        pieces: list[str] = []
        finish = None
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
            if len(pieces) == 3:
                await kill_and_restart(stack, "executor-0")
    assert "".join(pieces) == said and finish == "stop"


def set_env(stack: Stack, name: str, **env: str | None) -> None:
    """Change a component's recorded environment (its next start uses it)."""
    comps = stack.load()
    c = next(c for c in comps if c.name == name)
    for k, v in env.items():
        if v is None:
            c.env.pop(k, None)
        else:
            c.env[k] = v
    stack.save(comps)


async def until(cond, timeout: float = 60.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Wait for ``cond()`` (a coroutine function or a plain one) to be true."""
    async with asyncio.timeout(timeout):
        while True:
            value = cond()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(0.1)


async def committed(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): om.offset for tp, om in offsets.items()}


async def test_a_plan_redelivered_after_its_outputs_is_not_sent_to_the_provider_again(
    gw, stack, stack_settings, emulator_url
):
    """The executor exits right after the outputs of one request are acknowledged, before its plan
    is committed (``LLMGW_FAULT_EXIT_AFTER_PUBLISH``); restarted, it is given the plan again and
    finds it in ``llm.finished``: one provider call, one usage record."""
    rid = new_id()
    said = f"exactly once {rid}"
    bootstrap, prefix = stack_settings.bootstrap_servers, stack_settings.topic_prefix
    group = f"{prefix}llmgw-executor"
    async with only_executor_0(stack):
        set_env(stack, "executor-0", LLMGW_FAULT_EXIT_AFTER_PUBLISH=rid)
        try:
            await asyncio.to_thread(stack.restart, "executor-0")
            pid = component(stack, "executor-0").pid
            async with TopicTail(bootstrap, f"{prefix}llm.exec") as plans:
                result = await gw.chat(
                    model="demo-openai",
                    messages=[{"role": "user", "content": said}],
                    request_id=rid,
                    timeout_s=60,
                    emulator_scenario="echo",
                )
                assert result.status == "ok" and result.message.content == said
                await until(lambda: not _alive(pid), what="the executor's exit")
                (plan,) = [r for r in plans.records if r.key == rid.encode()]
                tp = (plan.topic, plan.partition)
                before = (await committed(bootstrap, group)).get(tp, -1)
                assert before <= plan.offset  # it died before committing the plan
                set_env(stack, "executor-0", LLMGW_FAULT_EXIT_AFTER_PUBLISH=None)
                await asyncio.to_thread(stack.restart, "executor-0")
                # the plan is redelivered to the restarted executor, which commits it without running it
                await until(
                    lambda: _committed_past(bootstrap, group, tp, plan.offset), what="the plan's commit"
                )
            billed = await usage_of(stack_settings, rid)
        finally:
            set_env(stack, "executor-0", LLMGW_FAULT_EXIT_AFTER_PUBLISH=None)
            if not _alive(component(stack, "executor-0").pid):
                await asyncio.to_thread(stack.restart, "executor-0")
    async with httpx.AsyncClient(base_url=emulator_url) as http:
        calls = (await http.get("/_emulator/calls", params={"kind": "chat"})).json()
    assert [c["inputs"] for c in calls if c["inputs"] == [said]] == [[said]]  # one provider call
    assert len(billed) == 1 and UsageRecorded.model_validate_json(billed[0]).status == "ok"


async def usage_of(settings, rid: str) -> list[bytes]:  # type: ignore[no-untyped-def]
    """Every ``llm.usage`` record of ``rid`` up to the topic's end now (read from the beginning)."""
    topics = Topics.load(settings.topics_path, settings.topic_prefix)
    found: list[bytes] = []
    tail = Tail(
        settings.bootstrap_servers,
        topics.usage.name,
        lambda r: found.append(r.value) if r.value and rid.encode() in r.value else None,
        partitions=range(topics.usage.partitions),
        start_at="beginning",
    )
    await tail.start()
    try:
        await tail.caught_up()
    finally:
        await tail.aclose()
    return found


async def _committed_past(bootstrap: str, group: str, tp: tuple[str, int], offset: int) -> bool:
    return (await committed(bootstrap, group)).get(tp, -1) > offset

"""Executor crashes on the real stack: a SIGKILL mid-stream delivers the answer once (SDK and
OpenAI SSE through the edge). executor-1 is stopped meanwhile, so executor-0 runs every plan
and the kill lands on the one running it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator

import openai
import orjson

from services.cli.stack import Component, Stack
from services.contracts.events import new_id

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

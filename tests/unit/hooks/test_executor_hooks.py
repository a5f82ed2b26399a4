"""Post-response hooks in the executor, whole and streamed, against the emulator in-process (scenario
``echo``: the answer is the prompt, so a test chooses what the provider says) with a recording
publisher (no broker). Tenant ``screened`` of the demo configuration has ``pii_redaction`` and a
``blocklist`` holding ``forbidden-topic`` on answers only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from services.contracts.errors import Cancelled
from services.contracts.events import (
    AuditRecorded,
    ChatParams,
    ChatRequested,
    ChunkEmitted,
    ResultProduced,
    UsageRecorded,
    new_id,
)
from services.emulator import create_app
from services.executor.app import Executor
from services.executor.chunker import ChunkEmitter
from services.router.handlers import plan
from services.runtime.config import load_config
from services.runtime.hooks import Hook, HookChain, TenantHooks
from services.runtime.settings import ROOT, Settings
from services.runtime.topics import Topics
from tests.support import eventually
from tests.unit.providers.support import AsgiTransport


class Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def publish(self, topic, event, *, key, partition=None, headers=None):  # type: ignore[no-untyped-def]
        self.events.append(event)
        ack = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        return ack

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
async def executor() -> AsyncIterator[Executor]:
    http = AsgiTransport(create_app())
    ex = Executor(Settings(), Topics.load(ROOT / "topics.yaml", ""), http=http, publisher=Recorder())  # type: ignore[arg-type]
    try:
        yield ex
    finally:  # never started: closing only releases it
        await ex.consumer._consumer.stop()
        await http.aclose()


async def run(
    ex: Executor, said: str, *, stream: bool, tenant: str = "screened", model: str = "demo-openai", **kw: Any
) -> Recorder:
    req = ChatRequested(
        request_id=new_id(),
        tenant_id=tenant,
        model=model,
        stream=stream,
        messages=[{"role": "user", "content": said}],
        params=ChatParams(extra={"emulator_scenario": "echo"}),
        **kw,
    )
    await ex.handle(plan(req, load_config(Settings().config_path, {})), None)  # type: ignore[arg-type]
    return ex.publisher  # type: ignore[return-value]


def audits(rec: Recorder) -> list[tuple[str, str | None]]:
    return [(a.action, a.reason) for a in rec.of(AuditRecorded)]


@pytest.mark.parametrize("model", ["demo-openai", "demo-anthropic", "demo-ollama"])
async def test_whole_answer_modified(executor: Executor, model: str) -> None:
    rec = await run(executor, "write to carol@example.org please", stream=False, model=model)
    (result,) = rec.of(ResultProduced)
    assert result.status == "ok" and result.message.content == "write to [EMAIL] please"
    assert audits(rec)[-1] == ("completed", None)


async def test_whole_answer_blocked_is_billed_final_and_audited(executor: Executor) -> None:
    rec = await run(executor, "all about forbidden-topic here", stream=False, fallbacks=["demo-anthropic"])
    (result,) = rec.of(ResultProduced)
    assert result.status == "error" and result.message is None
    assert result.error.code == "response_blocked" and result.error.details == {"rule": "blocklist"}
    assert result.provider == "emulator-openai" and not result.fallback_used  # a block is final
    (usage,) = rec.of(UsageRecorded)
    assert (usage.status, usage.error_code) == ("error", "response_blocked") and usage.completion_tokens == 4
    assert audits(rec) == [("started", None), ("blocked", "blocklist")]


async def test_whole_answer_allowed(executor: Executor) -> None:
    rec = await run(executor, "nothing to see", stream=False)
    (result,) = rec.of(ResultProduced)
    assert result.status == "ok" and result.message.content == "nothing to see"


def text_of(chunks: list[ChunkEmitted]) -> str:
    return "".join(c.delta.content or "" for c in chunks)


async def test_stream_blocked_before_the_chunk_that_holds_the_term(executor: Executor) -> None:
    rec = await run(executor, "fine words first then forbidden-topic and more", stream=True)
    chunks = rec.of(ChunkEmitted)
    assert [c.seq for c in chunks] == list(range(len(chunks))) and len(chunks) >= 2
    assert text_of(chunks) and "forbidden" not in text_of(chunks)  # some went out, never the term
    final = chunks[-1]
    assert final.final and final.finish_reason == "error" and not any(c.final for c in chunks[:-1])
    assert final.error.code == "response_blocked" and final.error.details == {"rule": "blocklist"}
    (result,) = rec.of(ResultProduced)
    assert result.error == final.error and result.streamed
    assert audits(rec)[-1] == ("blocked", "blocklist")


async def test_stream_modified_and_allowed(executor: Executor) -> None:
    rec = await run(executor, "ping dave@example.net soon", stream=True)
    chunks = rec.of(ChunkEmitted)
    assert text_of(chunks) == "ping [EMAIL] soon" and chunks[-1].finish_reason == "stop"
    (result,) = rec.of(ResultProduced)
    assert result.message.content == "ping [EMAIL] soon"  # the result says what the caller got
    executor.publisher.events.clear()  # type: ignore[attr-defined]
    rec = await run(executor, "plain text", stream=True, tenant="demo")
    assert text_of(rec.of(ChunkEmitted)) == "plain text"


class Failing(Hook):
    async def post_response(self, response):
        raise RuntimeError("moderation service down")


async def test_a_failing_hook_fails_the_answer_without_fallback(executor: Executor) -> None:
    executor.chat.hooks = TenantHooks({"demo": HookChain([("moderation", Failing())])})
    for stream in (False, True):
        executor.publisher.events.clear()  # type: ignore[attr-defined]
        rec = await run(executor, "hello", stream=stream, tenant="demo", fallbacks=["demo-anthropic"])
        (result,) = rec.of(ResultProduced)
        assert result.error.code == "internal_error" and "hook 'moderation' failed" in result.error.message
        assert not result.fallback_used and result.provider == "emulator-openai"


# --- the emitter's guard ---------------------------------------------------------------------


class Sent:
    def __init__(self) -> None:
        self.chunks: list[ChunkEmitted] = []

    async def __call__(self, chunk: ChunkEmitted) -> asyncio.Future[object]:
        self.chunks.append(chunk)
        ack = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        return ack


def emitter(guard, window_ms: int = 0) -> tuple[ChunkEmitter, Sent]:
    sent = Sent()
    return ChunkEmitter(sent, ChunkEmitted(request_id="r", tenant_id="t", seq=0), window_ms, guard), sent


async def test_guard_sees_sent_and_pending_and_a_block_ends_the_stream_at_once() -> None:
    calls: list[tuple[str, str, bool]] = []

    async def guard(sent: str, pending: str, final: bool) -> str:
        calls.append((sent, pending, final))
        if "bad" in sent + pending:
            raise Cancelled("stop")  # any GatewayError ends the stream with it
        return pending.upper()

    e, out = emitter(guard, window_ms=1000)
    await e.add("one ", None)  # the first delta goes out at once
    await e.add("two ", None)
    await e.add("ba", None)
    assert calls == [("", "one ", False)] and e.shown == "ONE "
    await e.add("d three", None)
    await e.finish("stop", None)  # the final flush asks the guard, which blocks
    assert calls[-1] == ("ONE ", "two bad three", True)
    assert [c.delta.content for c in out.chunks] == ["ONE ", None]
    final = out.chunks[-1]
    assert final.final and final.finish_reason == "error" and final.error.code == "cancelled"
    assert e.blocked is not None and e.closed
    await e.add("more", None)
    await e.finish("stop", None)
    assert len(out.chunks) == 2  # nothing after the end


async def test_a_block_in_a_timer_flush_sends_the_end_from_there() -> None:
    async def guard(sent: str, pending: str, final: bool) -> str:
        if "bad" in pending:
            raise Cancelled("stop")
        return pending

    e, out = emitter(guard, window_ms=0)
    await e.add("ok ", None)
    await e.add("bad", None)  # arms a timer flush
    await eventually(lambda: e.closed, within=5)
    assert [c.final for c in out.chunks] == [False, True] and e.blocked is not None


async def test_no_guard_no_change() -> None:
    e, out = emitter(None)
    await e.add("a", None)
    await e.finish("stop", None)
    assert [c.delta.content for c in out.chunks] == ["a", None] and e.shown == "" and not e.guarded


async def test_one_request_log_line_per_executed_request(executor: Executor, capsys) -> None:
    capsys.readouterr()
    rec = await run(executor, "all about forbidden-topic here", stream=True)
    (usage,) = rec.of(UsageRecorded)
    lines = [
        orjson.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith('{"log":"request"')
    ]
    assert len(lines) == 1
    line = lines[0]
    assert (line["service"], line["request_id"], line["tenant"], line["status"], line["error"]) == (
        "executor",
        usage.request_id,
        "screened",
        "error",
        "response_blocked",
    )
    assert line["completion_tokens"] == usage.completion_tokens and line["latency_ms"] > 0


async def test_text_arriving_while_the_guard_decides_waits_for_the_next_check() -> None:
    """A hook may await (a moderation service): deltas added meanwhile are not sent unchecked."""
    release = asyncio.Event()
    seen: list[str] = []

    async def guard(sent: str, pending: str, final: bool) -> str:
        seen.append(pending)
        if len(seen) == 2:
            await release.wait()
        return pending

    e, out = emitter(guard, window_ms=0)
    await e.add("first ", None)
    await e.add("second ", None)  # a timer flush asks the guard about it, and waits
    await eventually(lambda: len(seen) == 2, within=5)
    await e.add("third", None)  # while the guard decides
    release.set()
    await eventually(lambda: len(out.chunks) == 3, within=5)
    assert [c.delta.content for c in out.chunks] == ["first ", "second ", "third"]
    assert seen == ["first ", "second ", "third"]

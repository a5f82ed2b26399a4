"""The executor trusts only its own configuration (issue 10, item 3; DESIGN §7).

Hand-made ``llm.exec`` events (raw JSON, as anything able to write to the topic could send)
name a provider the configuration lacks, an upstream model it lacks, or carry the old plan
fields ``base_url`` / ``api_key_env`` pointing at a TCP listener of the test. The listener
must see no connection at all, and each plan lands in ``llm.dlq`` with a reason naming what
was unknown.

The caller named in such a plan gets nothing: a plan naming deployments this executor does
not have is not a request it can answer for (it did not come from a router sharing its
configuration), and the dead-letter queue is where operators see it. Asserted by reading the
caller's reply partition past the answer to a request sent after the plans were
dead-lettered: an answer to a forged plan, sent before its dead-lettering, would come first.

An ``llm.requests`` event of an operation nobody knows (``teleport.now``) is answered with
``capability_not_supported`` naming the operation, and dead-lettered.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import orjson
import pytest

from services.contracts.events import new_id

from .helpers import TopicTail


class Listener:
    """A TCP server on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    lst = Listener()
    lst.server = await asyncio.start_server(lst._accept, "127.0.0.1", 0)
    yield lst
    lst.server.close()
    await lst.server.wait_closed()


def headers(record) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {k: v.decode() for k, v in record.headers or ()}


def request_doc(rid: str, operation: str, reply_to: dict) -> dict:
    base = {
        "type": "llm.request.v1",
        "request_id": rid,
        "tenant_id": "demo",
        "user_id": "mallory",
        "reply_to": reply_to,
    }
    if operation == "embed":
        return base | {"operation": "embed", "model": "demo-embed", "input": ["exfiltrate me"]}
    return base | {
        "operation": "chat",
        "model": "demo-openai",
        "messages": [{"role": "user", "content": "hi"}],
    }


def plan_doc(rid: str, deployment: dict, reply_to: dict, operation: str = "chat") -> bytes:
    return orjson.dumps(
        {
            "type": "llm.exec.v1",
            "request_id": rid,
            "tenant_id": "demo",
            "request": request_doc(rid, operation, reply_to),
            "deployments": [deployment],
        }
    )


def forged_plans(url: str) -> dict[str, tuple[str, dict, str]]:
    """name -> (operation, deployment, what the dead-letter reason must name)."""
    return {
        "unknown provider, foreign URL (chat)": (
            "chat",
            {"alias": "demo-openai", "provider": "evil-corp", "upstream_model": "gpt-emu", "base_url": url},
            "provider 'evil-corp'",
        ),
        "unknown provider, foreign URL (embed)": (
            "embed",
            {
                "alias": "demo-embed",
                "provider": "evil-corp",
                "upstream_model": "text-embedding-emu",
                "base_url": url,
            },
            "provider 'evil-corp'",
        ),
        "known provider, unknown upstream model": (
            "chat",
            {
                "alias": "demo-openai",
                "provider": "emulator-openai",
                "upstream_model": "gpt-exfil",
                "base_url": url,
            },
            "demo-openai/emulator-openai/gpt-exfil",
        ),
        "old plan fields naming URL and secret": (
            "chat",
            {
                "alias": "demo-openai",
                "provider": "attacker",
                "provider_kind": "openai",
                "base_url": url,
                "upstream_model": "gpt-emu",
                "api_key_env": "AWS_SECRET_ACCESS_KEY",
                "price": {"input_per_mtok": 0},
            },
            "provider 'attacker'",
        ),
    }


async def test_forged_plans_call_nothing_and_are_dead_lettered(gw, stack_settings, listener):
    prefix = stack_settings.topic_prefix
    exec_topic = f"{prefix}llm.exec"
    reply_to = gw.reply_to.model_dump()
    plans = {new_id(): case for case in forged_plans(listener.url).values()}
    async with (
        TopicTail(stack_settings.bootstrap_servers, f"{prefix}llm.dlq") as dlq,
        TopicTail(stack_settings.bootstrap_servers, gw.reply_to.topic, gw.reply_to.partition) as replies,
    ):
        for rid, (operation, dep, _) in plans.items():
            fut = await gw._publisher.send_raw(
                exec_topic, plan_doc(rid, dep, reply_to, operation), key=rid.encode()
            )
            await fut

        def lettered(records) -> dict[str, object]:  # type: ignore[no-untyped-def]
            return {rid: r for r in records for rid in plans if rid.encode() in (r.value or b"")}

        await dlq.until(lambda rs: len(lettered(rs)) == len(plans))
        for rid, record in lettered(dlq.records).items():
            operation, dep, named = plans[rid]
            h = headers(record)
            assert h["dlq.source.topic"] == exec_topic and h["dlq.consumer"] == "executor"
            assert named in h["dlq.reason"] and "configuration does not have" in h["dlq.reason"], h[
                "dlq.reason"
            ]
            assert json.loads(record.value)["deployments"][0] == dep, "the original bytes, unchanged"

        sentinel = await gw.chat(model="demo-openai", messages=[{"role": "user", "content": "after"}])
        await replies.until(lambda rs: any(r.key == sentinel.request_id.encode() for r in rs))
        answered = {r.key.decode() for r in replies.records if r.key}
    assert listener.connections == 0, "a plan made the executor connect to a URL it named"
    assert not answered & set(plans), "a forged plan's caller got an answer"


async def test_old_plan_fields_are_ignored_for_a_configured_deployment(gw, stack_settings, listener):
    """``base_url`` and ``api_key_env`` in a plan naming a real deployment change nothing: the
    request runs against the configured provider."""
    rid = new_id()
    dep = {
        "alias": "demo-openai",
        "provider": "emulator-openai",
        "provider_kind": "openai",
        "upstream_model": "gpt-emu",
        "base_url": listener.url,
        "api_key_env": "AWS_SECRET_ACCESS_KEY",
    }
    reply_to = gw.reply_to.model_dump()
    async with TopicTail(
        stack_settings.bootstrap_servers, gw.reply_to.topic, gw.reply_to.partition
    ) as replies:
        fut = await gw._publisher.send_raw(
            f"{stack_settings.topic_prefix}llm.exec", plan_doc(rid, dep, reply_to), key=rid.encode()
        )
        await fut
        records = await replies.until(lambda rs: any(r.key == rid.encode() for r in rs))
    [result] = [json.loads(r.value) for r in records if r.key == rid.encode()]
    assert result["status"] == "ok" and result["provider"] == "emulator-openai"
    assert listener.connections == 0


async def test_an_unknown_operation_is_capability_not_supported_and_dead_lettered(gw, stack_settings):
    prefix = stack_settings.topic_prefix
    rid = new_id()
    doc = {
        "type": "llm.request.v1",
        "operation": "teleport.now",
        "request_id": rid,
        "tenant_id": "demo",
        "model": "demo-openai",
        "prompt": "a lighthouse at dusk",
        "reply_to": gw.reply_to.model_dump(),
    }
    async with (
        TopicTail(stack_settings.bootstrap_servers, f"{prefix}llm.dlq") as dlq,
        TopicTail(stack_settings.bootstrap_servers, gw.reply_to.topic, gw.reply_to.partition) as replies,
    ):
        fut = await gw._publisher.send_raw(f"{prefix}llm.requests", orjson.dumps(doc), key=b"demo")
        await fut
        answers = await replies.until(lambda rs: any(r.key == rid.encode() for r in rs))
        letters = await dlq.until(lambda rs: any(rid.encode() in (r.value or b"") for r in rs))
    [result] = [json.loads(r.value) for r in answers if r.key == rid.encode()]
    assert result["status"] == "error" and result["operation"] == "teleport.now"
    assert result["error"]["code"] == "capability_not_supported"
    assert "'teleport.now'" in result["error"]["message"]
    [letter] = [r for r in letters if rid.encode() in (r.value or b"")]
    h = headers(letter)
    assert h["dlq.source.topic"] == f"{prefix}llm.requests" and h["dlq.consumer"] == "router"
    assert orjson.loads(letter.value) == doc

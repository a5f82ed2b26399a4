"""Hooks over the whole stack, each outcome sync and streamed, in every chat wire format.

The emulator's scenario ``echo`` answers the last user message verbatim, so the answer is what the
provider received. Tenant ``guarded`` (demo configuration): PII redaction and a blocklist holding
``forbidden-topic`` before the call (router) and on answers (executor); tenant ``screened``: the
same on answers only, so what the caller sends comes back and the answer-side outcomes show."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from services.client import GatewayClient
from services.contracts.errors import RequestBlocked, ResponseBlocked
from services.contracts.events import new_id

from .helpers import TopicTail

ALIASES = ["demo-openai", "demo-anthropic", "demo-ollama"]
PII = "mail alice@example.com or call +1 415 555 2671, card 4111 1111 1111 1111, iban DE89 3704 0044 0532 0130 00"
REDACTED = "mail [EMAIL] or call [PHONE], card [CARD], iban [IBAN]"
ECHO = {"emulator_scenario": "echo"}


@pytest.fixture(scope="module")
async def guarded(stack, stack_settings) -> AsyncIterator[GatewayClient]:
    async with GatewayClient(
        stack_settings.bootstrap_servers,
        "guarded",
        "g-user",
        topic_prefix=stack_settings.topic_prefix,
        timeout_s=30,
    ) as client:
        yield client


@pytest.fixture(scope="module")
async def screened(stack, stack_settings) -> AsyncIterator[GatewayClient]:
    async with GatewayClient(
        stack_settings.bootstrap_servers,
        "screened",
        "s-user",
        topic_prefix=stack_settings.topic_prefix,
        timeout_s=30,
    ) as client:
        yield client


def said(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


async def streamed(
    gw: GatewayClient, alias: str, text: str, scenario: str = "echo"
) -> tuple[list, Exception | None]:
    chunks, error = [], None
    try:
        async for chunk in gw.stream_chat(model=alias, messages=said(text), emulator_scenario=scenario):
            chunks.append(chunk)
    except (RequestBlocked, ResponseBlocked) as exc:
        error = exc
    return chunks, error


def content(chunks: list) -> str:
    return "".join(c.delta.content or "" for c in chunks)


# --- before the call (router) ------------------------------------------------------------------


@pytest.mark.parametrize("alias", ALIASES)
async def test_pii_is_redacted_before_the_provider_sees_it(guarded, alias) -> None:
    result = await guarded.chat(model=alias, messages=said(PII), **ECHO)
    assert result.message.content == REDACTED  # the provider echoes what it received
    assert result.usage.completion_tokens == len(REDACTED.split())  # usage still counted
    chunks, error = await streamed(guarded, alias, PII)
    assert error is None and content(chunks) == REDACTED
    assert chunks[-1].final and chunks[-1].finish_reason == "stop"


@pytest.mark.parametrize("alias", ALIASES)
async def test_a_blocked_request_never_reaches_a_provider(guarded, stack_settings, alias) -> None:
    rid = new_id()
    async with TopicTail(
        stack_settings.bootstrap_servers, f"{stack_settings.topic_prefix}llm.audit"
    ) as audit:
        with pytest.raises(RequestBlocked) as blocked:
            await guarded.chat(model=alias, messages=said("explain forbidden-topic"), request_id=rid, **ECHO)
        recs = await audit.until(lambda rs: any(rid.encode() in r.value for r in rs))
    assert blocked.value.code == "request_blocked" and blocked.value.details["rule"] == "blocklist"
    assert "rule 'blocklist'" in blocked.value.message
    events = [json.loads(r.value) for r in recs if rid.encode() in r.value]
    assert [(e["action"], e["actor"], e["reason"]) for e in events] == [("blocked", "router", "blocklist")]
    chunks, error = await streamed(guarded, alias, "Forbidden-Topic, streamed")
    assert chunks == [] and isinstance(error, RequestBlocked) and error.details["rule"] == "blocklist"


async def test_an_allowed_request_is_unchanged(guarded) -> None:
    result = await guarded.chat(model="demo-openai", messages=said("nothing to hide here"), **ECHO)
    assert result.message.content == "nothing to hide here"
    chunks, error = await streamed(guarded, "demo-anthropic", "nothing to hide here")
    assert error is None and content(chunks) == "nothing to hide here"


# --- on the answer (executor) ---------------------------------------------------------------------


@pytest.mark.parametrize("alias", ALIASES)
async def test_answers_are_redacted(screened, alias) -> None:
    text = "reach alice@example.com today"
    result = await screened.chat(model=alias, messages=said(text), **ECHO)
    assert result.message.content == "reach [EMAIL] today"
    chunks, error = await streamed(screened, alias, text)
    assert error is None and content(chunks) == "reach [EMAIL] today"


@pytest.mark.parametrize("alias", ALIASES)
async def test_a_blocked_answer_is_final_and_billed(screened, stack_settings, alias) -> None:
    rid = new_id()
    async with TopicTail(
        stack_settings.bootstrap_servers, f"{stack_settings.topic_prefix}llm.usage"
    ) as usage:
        with pytest.raises(ResponseBlocked) as blocked:
            await screened.chat(
                model=alias,
                messages=said("all about forbidden-topic"),
                request_id=rid,
                fallbacks=[a for a in ALIASES if a != alias],
                **ECHO,
            )
        recs = await usage.until(lambda rs: any(rid.encode() in r.value for r in rs))
    assert blocked.value.code == "response_blocked" and blocked.value.details["rule"] == "blocklist"
    (record,) = [json.loads(r.value) for r in recs if rid.encode() in r.value]  # one call: no fallback
    assert (record["alias"], record["error_code"], record["completion_tokens"]) == (
        alias,
        "response_blocked",
        3,
    )


@pytest.mark.parametrize("alias", ALIASES)
async def test_a_stream_is_cut_before_the_chunk_with_the_term(screened, alias) -> None:
    """Pieces 30 ms apart, chunks at most every 20 ms: several chunks go out, then the one that
    would complete the term does not; the stream ends with ``response_blocked``."""
    text = "one two three four five six forbidden-topic seven eight"
    chunks, error = await streamed(screened, alias, text, "echo,chunk_delay_ms=30")
    assert isinstance(error, ResponseBlocked) and error.details["rule"] == "blocklist"
    sent = content(chunks)
    assert "one two" in sent and "forbidden" not in sent and "seven" not in sent
    assert len([c for c in chunks if c.delta.content]) >= 2  # it was cut mid-stream
    final = chunks[-1]
    assert final.final and final.finish_reason == "error" and final.error.code == "response_blocked"


# --- the edge -------------------------------------------------------------------------------------


@pytest.fixture
async def http(edge_url) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=edge_url, timeout=30) as client:
        yield client


def body(text: str, **kw) -> dict:
    return {"model": "demo-openai", "messages": said(text), "emulator_scenario": "echo", **kw}


async def test_edge_each_outcome(http) -> None:
    guarded = {"authorization": "Bearer sk-llmgw-guarded"}
    r = await http.post("/v1/chat/completions", json=body(PII), headers=guarded)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == REDACTED
    r = await http.post("/v1/chat/completions", json=body("forbidden-topic"), headers=guarded)
    assert r.status_code == 400
    assert (r.json()["error"]["code"], r.json()["error"]["details"]) == (
        "request_blocked",
        {"rule": "blocklist"},
    )
    r = await http.post("/v1/chat", json=body("forbidden-topic", client_id="c1"), headers=guarded)
    assert r.status_code == 400 and r.json()["error"]["type"] == "request_blocked"
    screened = {"authorization": "Bearer sk-llmgw-screened"}
    r = await http.post("/v1/chat/completions", json=body("forbidden-topic"), headers=screened)
    assert r.status_code == 502 and r.json()["error"]["code"] == "response_blocked"
    async with http.stream(
        "POST",
        "/v1/chat/completions",
        headers=screened,
        json=body("fine words and then forbidden-topic", stream=True),
    ) as s:
        lines = [ln async for ln in s.aiter_lines() if ln.startswith("data: ")]
    last = json.loads(lines[-1][6:])
    assert last["error"]["code"] == "response_blocked" and "data: [DONE]" not in lines
    assert "forbidden" not in "".join(lines[:-1])


async def test_edge_rejections_are_audited(http, stack_settings) -> None:
    rid = f"edge-401-{new_id()[:8]}"
    async with TopicTail(
        stack_settings.bootstrap_servers, f"{stack_settings.topic_prefix}llm.audit"
    ) as audit:
        r = await http.post(
            "/v1/chat/completions",
            json=body("hi"),
            headers={"authorization": "Bearer sk-not-a-key", "x-request-id": rid},
        )
        assert r.status_code == 401
        rid2 = f"edge-400-{new_id()[:8]}"
        r = await http.post(
            "/v1/chat/completions",
            content=b"{broken",
            headers={"authorization": "Bearer sk-llmgw-guarded", "x-request-id": rid2},
        )
        assert r.status_code == 400
        recs = await audit.until(lambda rs: all(any(x.encode() in r.value for r in rs) for x in (rid, rid2)))
    by_id = {
        e["request_id"]: e for e in (json.loads(r.value) for r in recs) if e["request_id"] in (rid, rid2)
    }
    assert (by_id[rid]["action"], by_id[rid]["actor"], by_id[rid]["tenant_id"], by_id[rid]["error_code"]) == (
        "blocked",
        "edge",
        "unknown",
        "authentication_error",
    )
    assert "sk-not-a-key" not in json.dumps(by_id[rid])
    assert (by_id[rid2]["tenant_id"], by_id[rid2]["user_id"], by_id[rid2]["error_code"]) == (
        "guarded",
        "guarded-user",
        "validation_error",
    )

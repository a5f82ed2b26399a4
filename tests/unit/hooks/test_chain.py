"""How a tenant's hooks run: order, the first block, modifications handed on (content only),
hooks that fail or answer nonsense (fail closed), stages a hook takes part in, and the errors a
block becomes."""

from __future__ import annotations

import dataclasses

import pytest

from services.contracts.errors import InternalError, ModelNotApproved, RequestBlocked, ResponseBlocked
from services.contracts.events import ChatRequested, Message
from services.runtime.hooks import ALLOW, Block, Hook, HookChain, HookResponse, Modify, block_error, overrides


def chat(text: str = "hello", **kw) -> ChatRequested:
    return ChatRequested(
        request_id="r1",
        tenant_id="t",
        user_id="u",
        model="m",
        messages=[{"role": "user", "content": text}],
        **kw,
    )


class Seen(Hook):
    """Records what it saw; answers ``verdict`` (a callable of the request)."""

    def __init__(self, verdict=lambda r: ALLOW):
        self.seen: list = []
        self.verdict = verdict

    async def pre_call(self, request):
        self.seen.append(request)
        return self.verdict(request)


class Upper(Hook):
    async def pre_call(self, request):
        msgs = [Message(role=m.role, content=str(m.content).upper()) for m in request.messages]
        # a hook trying to move the request elsewhere: only the content is taken
        return Modify(
            request.model_copy(
                update={"messages": msgs, "tenant_id": "other", "model": "pricey", "request_id": "forged"}
            )
        )


async def test_modifications_are_handed_on_and_only_content_is_taken() -> None:
    after = Seen()
    out = await HookChain([("upper", Upper()), ("after", after)]).pre_call(chat("hello"))
    assert after.seen[0].messages[0].content == "HELLO"
    assert isinstance(out, ChatRequested) and out.messages[0].content == "HELLO"
    assert (out.request_id, out.tenant_id, out.model) == ("r1", "t", "m")


async def test_the_first_block_wins_and_later_hooks_are_not_asked() -> None:
    later = Seen()
    chain = HookChain([("a", Seen()), ("b", Seen(lambda r: Block("", "no"))), ("c", later)])
    out = await chain.pre_call(chat())
    assert out == Block("b", "no")  # a block without a rule is named by its configured name
    assert later.seen == []


async def test_a_failing_or_confused_hook_fails_the_request() -> None:
    def boom(request):
        raise RuntimeError("down")

    with pytest.raises(InternalError, match="hook 'bad' failed in pre_call: RuntimeError: down"):
        await HookChain([("bad", Seen(boom))]).pre_call(chat())
    with pytest.raises(InternalError, match="not a verdict"):
        await HookChain([("odd", Seen(lambda r: "yes"))]).pre_call(chat())


class PreOnly(Hook):
    async def pre_call(self, request):
        return ALLOW


class Both(PreOnly):
    async def post_response(self, response):
        return ALLOW


def test_a_chain_holds_per_stage_only_the_hooks_that_take_part() -> None:
    assert overrides(PreOnly(), "pre_call") and not overrides(PreOnly(), "post_response")

    class Nothing(Hook):
        pass

    chain = HookChain([("p", PreOnly()), ("b", Both()), ("nothing", Nothing())])
    assert [n for n, _ in chain.pre] == ["p", "b"]
    assert [n for n, _ in chain.post] == ["b"]


class Rewrite(Hook):
    def __init__(self, text: str):
        self.text = text

    async def post_response(self, response):
        return Modify(dataclasses.replace(response, text=self.text))


async def test_a_stream_modification_must_keep_what_was_sent() -> None:
    req = chat()
    sent = HookResponse(req, "hello wor", final=False, sent=6)
    out = await HookChain([("r", Rewrite("hello WORLD"))]).post_response(sent)
    assert isinstance(out, HookResponse) and out.text == "hello WORLD" and (out.sent, out.final) == (6, False)
    out = await HookChain([("r", Rewrite("HELLO world"))]).post_response(sent)
    assert isinstance(out, Block) and out.rule == "r" and "already sent" in out.reason


def test_block_errors_name_the_rule() -> None:
    err = block_error(Block("blocklist", "the request contains blocked content"), "request")
    assert isinstance(err, RequestBlocked) and err.code == "request_blocked"
    assert err.message == "request blocked by rule 'blocklist': the request contains blocked content"
    assert err.details == {"rule": "blocklist"}
    err = block_error(Block("pii_redaction", "x"), "response")
    assert isinstance(err, ResponseBlocked) and err.details["rule"] == "pii_redaction"
    own = ModelNotApproved("model 'm' is disabled by policy", param="model")
    err = block_error(Block("disabled_models", "x", own), "request")
    assert isinstance(err, ModelNotApproved) and err.message == own.message and err.param == "model"
    assert err.details == {"rule": "disabled_models"} and own.details == {}

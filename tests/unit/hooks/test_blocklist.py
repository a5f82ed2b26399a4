"""Built-in ``blocklist``: whole-word terms (any case), regular expressions, requests and answers."""

from __future__ import annotations

import pytest

from services.contracts.events import ChatRequested, EmbedRequested
from services.runtime.hooks import ALLOW, Block
from services.runtime.hooks.blocklist import blocklist
from services.runtime.hooks.roles import HookResponse, overrides


def chat(*texts: str | list) -> ChatRequested:
    return ChatRequested(
        request_id="r", tenant_id="t", model="m", messages=[{"role": "user", "content": t} for t in texts]
    )


@pytest.mark.parametrize(
    ("text", "blocked"),
    [
        ("let us discuss the forbidden-topic today", True),
        ("Forbidden-Topic.", True),
        ("the forbidden-topics list", False),
        ("a not-forbidden-topic-at-all phrase", True),  # "-" ends a word
        ("forbidden-topicality", False),
        ("harmless", False),
    ],
)
async def test_terms_are_whole_words_in_any_case(text: str, blocked: bool) -> None:
    verdict = await blocklist(terms=["forbidden-topic"]).pre_call(chat(text))
    assert isinstance(verdict, Block) is blocked


async def test_block_names_the_rule_and_never_the_text() -> None:
    verdict = await blocklist(terms=["forbidden-topic"]).pre_call(chat("ok", "the forbidden-topic"))
    assert isinstance(verdict, Block) and verdict.rule == "blocklist"
    assert "forbidden" not in verdict.reason
    custom = await blocklist(terms=["x"], rule="no-x").pre_call(chat("an x"))
    assert isinstance(custom, Block) and custom.rule == "no-x"


async def test_patterns_parts_and_embeddings() -> None:
    hook = blocklist(patterns=[r"\bproject\s+falcon\b"])
    assert isinstance(await hook.pre_call(chat("about project  falcon")), Block)
    assert await hook.pre_call(chat("Project Falcon")) is ALLOW  # patterns match as written
    parts = [{"type": "text", "text": "forbidden-"}, {"type": "text", "text": "topic"}]
    assert isinstance(await blocklist(terms=["forbidden-topic"]).pre_call(chat(parts)), Block)  # parts joined
    embed = EmbedRequested(request_id="r", tenant_id="t", model="m", input=["fine", "forbidden-topic"])
    assert isinstance(await blocklist(terms=["forbidden-topic"]).pre_call(embed), Block)


async def test_answers_are_checked_as_they_accumulate() -> None:
    hook = blocklist(terms=["forbidden-topic"])
    req = chat("hi")
    assert await hook.post_response(HookResponse(req, "all about the forbid", final=False, sent=10)) is ALLOW
    verdict = await hook.post_response(
        HookResponse(req, "all about the forbidden-topic", final=False, sent=20)
    )
    assert isinstance(verdict, Block) and "answer" in verdict.reason


def test_options() -> None:
    answers_only = blocklist(terms=["a"], requests=False)
    assert not overrides(answers_only, "pre_call") and overrides(answers_only, "post_response")
    with pytest.raises(ValueError, match="terms or patterns"):
        blocklist()
    with pytest.raises(ValueError, match=r"patterns\[0\]: not a regular expression"):
        blocklist(patterns=["(unclosed"])
    with pytest.raises(ValueError, match="both off"):
        blocklist(terms=["a"], requests=False, responses=False)

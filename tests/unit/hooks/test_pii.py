"""Built-in ``pii_redaction``: what each detector finds (and, as much, what it leaves alone), the
checks behind them (Luhn, mod 97), and the hook on requests and on answers, whole and streamed."""

from __future__ import annotations

import dataclasses

import pytest

from services.contracts.events import ChatRequested, EmbedRequested
from services.runtime.hooks import ALLOW, Block, Modify
from services.runtime.hooks.pii import find, iban_valid, luhn, pii_redaction, redact
from services.runtime.hooks.roles import HookResponse, overrides

FOUND = [
    ("write to alice.b+tag@mail.example.co.uk, thanks", "write to [EMAIL], thanks"),
    ("two: a@x.io,b@y.io", "two: [EMAIL],[EMAIL]"),
    ("card 4111 1111 1111 1111 expires", "card [CARD] expires"),
    ("card 4111-1111-1111-1111.", "card [CARD]."),
    ("amex 378282246310005 ok", "amex [CARD] ok"),
    ("iban DE89 3704 0044 0532 0130 00 please", "iban [IBAN] please"),
    ("GB82WEST12345698765432", "[IBAN]"),
    ("to NL91ABNA0417164300.", "to [IBAN]."),
    ("call +1 415 555 2671 now", "call [PHONE] now"),
    ("(415) 555-2671", "[PHONE]"),
    ("+1 (415) 555-2671", "[PHONE]"),
    ("office 020 7946 0958", "office [PHONE]"),
    ("+44 20 7946 0958", "[PHONE]"),
    ("00 49 30 901820", "[PHONE]"),
    ("x 4155552671 y", "x [PHONE] y"),
]
LEFT_ALONE = [
    "card 4111 1111 1111 1112 fails Luhn",
    "iban DE89 3704 0044 0532 0130 02 fails mod 97",
    "on 2024-01-15 at 10:30, ts 2024-01-15T10:30:00Z",
    "pay 10 000 000 now, or 1,000,000, or 3.14159265358979",
    "version 1.2.3, order 12345, list 1 2 3 4 5 6 7 8",
    "x@localhost and user@@example.com and @handle",
    "a" * 70 + "@example.com",  # a local part over 64 characters is no address
]


@pytest.mark.parametrize(("text", "redacted"), FOUND)
def test_found_and_redacted(text: str, redacted: str) -> None:
    assert redact(text) == redacted


@pytest.mark.parametrize("text", LEFT_ALONE)
def test_left_alone(text: str) -> None:
    assert redact(text) == text


def test_checks() -> None:
    assert luhn("4111111111111111") and not luhn("4111111111111112")
    assert luhn("79927398713")
    assert iban_valid("DE89370400440532013000") and not iban_valid("DE89370400440532013001")
    assert not iban_valid("DE8937040044053201300")  # Germany's IBAN has 22 characters
    assert not iban_valid("ZZ89370400440532013000")  # no such country


def test_overlaps_go_to_the_earlier_kind_and_kinds_can_be_chosen() -> None:
    text = "mail 4155552671@example.com or 4111 1111 1111 1111"
    assert [s.kind for s in find(text)] == ["email", "card"]
    assert redact(text, kinds=["card"]) == "mail 4155552671@example.com or [CARD]"
    assert redact(text, kinds=["phone"]) == "mail [PHONE]@example.com or 4111 1111 1111 1111"


def chat(*messages: dict) -> ChatRequested:
    return ChatRequested(request_id="r", tenant_id="t", model="m", messages=list(messages))


async def test_requests_every_text_is_redacted_and_the_rest_kept() -> None:
    hook = pii_redaction()
    req = chat(
        {"role": "system", "content": "no pii here"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "me: bob@example.com"},
                {"type": "image_url", "image_url": {"url": "data:,x"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "function": {"name": "pay", "arguments": '{"iban": "DE89370400440532013000"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "paid from 4111 1111 1111 1111"},
    )
    verdict = await hook.pre_call(req)
    assert isinstance(verdict, Modify)
    out = verdict.value
    assert out.messages[0] is req.messages[0]  # untouched messages are not copied
    assert out.messages[1].content == [
        {"type": "text", "text": "me: [EMAIL]"},
        {"type": "image_url", "image_url": {"url": "data:,x"}},
    ]
    assert out.messages[2].tool_calls[0].function.arguments == '{"iban": "[IBAN]"}'
    assert out.messages[3].content == "paid from [CARD]"
    assert req.messages[3].content == "paid from 4111 1111 1111 1111"  # the original is not changed
    assert await hook.pre_call(chat({"role": "user", "content": "nothing to hide"})) is ALLOW


async def test_embeddings_inputs_are_redacted() -> None:
    req = EmbedRequested(request_id="r", tenant_id="t", model="m", input=["plain", "ring +44 20 7946 0958"])
    verdict = await pii_redaction().pre_call(req)
    assert isinstance(verdict, Modify) and verdict.value.input == ["plain", "ring [PHONE]"]


def test_options_and_stages() -> None:
    assert overrides(pii_redaction(), "pre_call") and not overrides(pii_redaction(), "post_response")
    both = pii_redaction(responses=True)
    assert overrides(both, "pre_call") and overrides(both, "post_response")
    answers = pii_redaction(requests=False, responses=True)
    assert not overrides(answers, "pre_call") and overrides(answers, "post_response")
    with pytest.raises(ValueError, match="kinds: unknown 'ssn'"):
        pii_redaction(kinds=["email", "ssn"])
    with pytest.raises(ValueError, match="both off"):
        pii_redaction(requests=False)


REQ = chat({"role": "user", "content": "hi"})


async def test_whole_answers_are_redacted() -> None:
    hook = pii_redaction(requests=False, responses=True)
    verdict = await hook.post_response(HookResponse(REQ, "reach me at carol@example.org today"))
    assert isinstance(verdict, Modify) and verdict.value.text == "reach me at [EMAIL] today"
    assert await hook.post_response(HookResponse(REQ, "nothing")) is ALLOW


async def test_streams_only_unsent_text_is_redacted_and_a_cut_item_blocks() -> None:
    hook = pii_redaction(requests=False, responses=True)
    sent = "first write to dan@example.com then "
    # the address was in an earlier chunk (and redacted then): only what is pending counts
    pending = HookResponse(REQ, sent + "call +1 415 555 2671", final=False, sent=len(sent))
    verdict = await hook.post_response(pending)
    assert isinstance(verdict, Modify) and verdict.value.text == sent + "call [PHONE]"
    # an item that began in text already sent cannot be redacted: the stream is blocked
    cut = HookResponse(REQ, "mail erin@exa" + "mple.com", final=False, sent=len("mail erin@exa"))
    verdict = await hook.post_response(cut)
    assert isinstance(verdict, Block) and verdict.rule == "pii_redaction"
    assert "e-mail" in verdict.reason and "erin" not in verdict.reason
    assert await hook.post_response(dataclasses.replace(pending, text=sent + "ok")) is ALLOW

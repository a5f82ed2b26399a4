"""Scenario ``echo``: every chat wire format answers the last user message verbatim, whole and
streamed, so a test sees exactly what the provider received; usage is still counted."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from services.emulator.scenario import ScenarioError, parse_pairs, resolve
from services.emulator.text import count_prompt_tokens, echo_pieces, last_user_text

SAID = "  mail  alice@example.com, card 4111 1111 1111 1111\tnow "
MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "an earlier question"},
    {"role": "assistant", "content": "an earlier answer"},
    {"role": "user", "content": SAID},
]
PARTS = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "first part, "},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "text", "text": "second part"},
        ],
    }
]


def test_pieces_join_back_to_the_text_exactly():
    pieces = echo_pieces(SAID)
    assert "".join(pieces) == SAID
    assert pieces == ["  mail", "  alice@example.com,", " card", " 4111", " 1111", " 1111", " 1111", "\tnow "]
    assert echo_pieces("") == [] and echo_pieces("   ") == []
    assert echo_pieces("one") == ["one"]


def test_last_user_text_in_each_shape():
    assert last_user_text(MESSAGES) == SAID
    assert last_user_text(PARTS) == "first part, second part"  # OpenAI parts: text parts joined
    anthropic_blocks = [
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": "x"},
                {"type": "text", "text": "after the tool"},
            ],
        }
    ]
    assert last_user_text(anthropic_blocks) == "after the tool"
    assert last_user_text([{"role": "system", "content": "no user here"}]) == ""


def test_scenario_key_and_bare_flag():
    assert resolve("gpt-emu@echo=1")[1].echo is True
    assert resolve("gpt-emu", "echo")[1].echo is True  # a bare flag item means =1
    assert resolve("gpt-emu")[1].echo is False
    assert parse_pairs("echo, tokens=3") == {"echo": "1", "tokens": "3"}
    with pytest.raises(ScenarioError, match="not key=value"):
        parse_pairs("tokens")  # only flags may be bare


@pytest.fixture
def http(emulator_url):
    with httpx.Client(base_url=emulator_url, timeout=10) as c:
        yield c


@pytest.fixture
def oai(emulator_url):
    with openai.OpenAI(base_url=f"{emulator_url}/v1", api_key="x", max_retries=0) as c:
        yield c


@pytest.fixture
def claude(emulator_url):
    with anthropic.Anthropic(base_url=emulator_url, api_key="x", max_retries=0) as c:
        yield c


def test_openai_whole_and_streamed(oai):
    done = oai.chat.completions.create(model="gpt-emu@echo=1", messages=MESSAGES)
    assert done.choices[0].message.content == SAID
    assert done.choices[0].finish_reason == "stop"
    assert done.usage.completion_tokens == len(echo_pieces(SAID)) == 8
    assert done.usage.prompt_tokens == count_prompt_tokens(MESSAGES)

    stream = oai.chat.completions.create(
        model="gpt-emu",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"emulator_scenario": "echo"},
    )
    deltas, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            deltas.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert deltas == echo_pieces(SAID)
    assert usage is not None and usage.completion_tokens == 8


def test_openai_text_parts_and_max_tokens(oai):
    done = oai.chat.completions.create(model="gpt-emu@echo=1", messages=PARTS)
    assert done.choices[0].message.content == "first part, second part"
    cut = oai.chat.completions.create(model="gpt-emu@echo=1", messages=MESSAGES, max_tokens=2)
    assert cut.choices[0].message.content == "  mail  alice@example.com,"
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 2


def test_anthropic_whole_and_streamed(claude):
    msgs = [{"role": "user", "content": [{"type": "text", "text": "tell "}, {"type": "text", "text": SAID}]}]
    m = claude.messages.create(model="claude-emu@echo=1", max_tokens=100, messages=msgs)
    assert m.content[0].text == "tell " + SAID
    assert m.usage.output_tokens == len(echo_pieces("tell " + SAID))
    with claude.messages.stream(model="claude-emu@echo=1", max_tokens=100, messages=msgs) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    assert streamed == "tell " + SAID
    assert final.usage.output_tokens == m.usage.output_tokens


def test_ollama_whole_and_streamed(http):
    body = {"model": "llama-emu@echo=1", "messages": MESSAGES, "stream": False}
    whole = http.post("/api/chat", json=body).json()
    assert whole["message"]["content"] == SAID
    assert whole["eval_count"] == 8
    lines = [
        json.loads(line) for line in http.post("/api/chat", json=body | {"stream": True}).text.splitlines()
    ]
    assert [line["message"]["content"] for line in lines[:-1]] == echo_pieces(SAID)
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 8


def test_echo_leaves_tool_calls_alone(oai):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    done = oai.chat.completions.create(model="gpt-emu@echo=1,tool=1", messages=MESSAGES, tools=tools)
    assert done.choices[0].finish_reason == "tool_calls"
    assert done.choices[0].message.tool_calls[0].function.name == "f"

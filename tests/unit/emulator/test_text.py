from __future__ import annotations

import base64
import json
import struct

from services.emulator.text import (
    argument_pieces,
    arguments_json,
    completion_pieces,
    completion_text,
    count_prompt_tokens,
    embedding,
    embedding_base64,
    tool_arguments,
)


def test_completion_pieces_are_one_token_each():
    assert completion_pieces(3) == ["tok0", " tok1", " tok2"]
    assert completion_text(0) == ""
    assert len(completion_pieces(3000)) == 3000
    assert completion_pieces(3000)[-1] == " tok2999"


def test_count_prompt_tokens_shapes():
    assert count_prompt_tokens([]) == 0
    assert count_prompt_tokens(None) == 0
    assert count_prompt_tokens([{"role": "user", "content": "a b  c\nd"}]) == 3 + 4
    parts = [{"type": "text", "text": "one two"}, {"type": "image_url", "image_url": {"url": "x y z"}}]
    assert count_prompt_tokens([{"role": "user", "content": parts}]) == 3 + 2
    tool_result = [
        {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "r1 r2 r3"}]}
    ]
    assert count_prompt_tokens([{"role": "user", "content": tool_result}]) == 3 + 3
    assert count_prompt_tokens([{"role": "assistant", "content": None}]) == 3
    assert count_prompt_tokens([{"role": "user", "content": "q"}], system="s1 s2") == (3 + 1) + (3 + 2)
    assert count_prompt_tokens([], system=[{"type": "text", "text": "s1 s2"}]) == 3 + 2


def test_tool_arguments_follow_schema():
    schema = {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "i": {"type": "integer"},
            "n": {"type": "number"},
            "b": {"type": "boolean"},
            "e": {"type": "string", "enum": ["x", "y"]},
            "a": {"type": "array", "items": {"type": "integer"}},
            "o": {"type": "object", "properties": {"k": {"type": ["null", "string"]}}},
        },
    }
    assert tool_arguments(schema) == {
        "s": "tok0",
        "i": 1,
        "n": 1.5,
        "b": True,
        "e": "x",
        "a": [1],
        "o": {"k": "tok0"},
    }
    assert tool_arguments(None) == {}


def test_argument_pieces_rejoin():
    text = arguments_json({"city": "tok0", "days": 1})
    pieces = argument_pieces(text)
    assert "".join(pieces) == text and len(pieces) > 1
    assert json.loads("".join(pieces)) == {"city": "tok0", "days": 1}
    assert argument_pieces("{}") == ["{}"]


def test_embeddings_deterministic_unit_vectors():
    a = embedding("hello", 16)
    assert a == embedding("hello", 16) and a != embedding("hellp", 16)
    assert abs(sum(x * x for x in a) - 1.0) < 1e-9
    decoded = struct.unpack("<16f", base64.b64decode(embedding_base64(a)))
    assert all(abs(x - y) < 1e-6 for x, y in zip(decoded, a, strict=True))

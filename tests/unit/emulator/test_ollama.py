"""Ollama's native API (``/api/*``) through plain httpx."""

from __future__ import annotations

import json
import math

import httpx
import pytest

from services.emulator.text import completion_text, count_prompt_tokens

MESSAGES = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "why is the sky blue"}]


@pytest.fixture
def http(emulator_url):
    with httpx.Client(base_url=emulator_url, timeout=10) as c:
        yield c


def test_streams_ndjson_by_default(http):
    r = http.post("/api/chat", json={"model": "llama-emu@tokens=4", "messages": MESSAGES})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert len(lines) == 5
    for line in lines[:-1]:
        assert line["done"] is False and line["model"] == "llama-emu"
        assert line["message"]["role"] == "assistant"
        assert line["created_at"].endswith("Z")
    assert "".join(line["message"]["content"] for line in lines) == completion_text(4)
    last = lines[-1]
    assert last["done"] is True and last["done_reason"] == "stop"
    assert last["eval_count"] == 4
    assert last["prompt_eval_count"] == count_prompt_tokens(MESSAGES) == 3 + 2 + 3 + 5
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(last[key], int) and last[key] > 0


def test_non_streaming(http):
    r = http.post("/api/chat", json={"model": "llama-emu@tokens=3", "messages": MESSAGES, "stream": False})
    body = r.json()
    assert r.headers["content-type"] == "application/json"
    assert body["message"] == {"role": "assistant", "content": completion_text(3)}
    assert body["done"] is True and body["done_reason"] == "stop"
    assert body["eval_count"] == 3
    assert body["prompt_eval_count"] == count_prompt_tokens(MESSAGES)
    assert {
        "total_duration",
        "load_duration",
        "prompt_eval_duration",
        "eval_duration",
        "created_at",
    } <= body.keys()


def test_num_predict_gives_length(http):
    body = {
        "model": "llama-emu@tokens=9",
        "messages": MESSAGES,
        "stream": False,
        "options": {"num_predict": 2},
    }
    r = http.post("/api/chat", json=body).json()
    assert r["done_reason"] == "length" and r["eval_count"] == 2
    assert r["message"]["content"] == completion_text(2)


def test_tool_call(http):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    body = {"model": "llama-emu@tool=1", "messages": MESSAGES, "tools": tools, "stream": False}
    message = http.post("/api/chat", json=body).json()["message"]
    assert message["tool_calls"] == [{"function": {"name": "weather", "arguments": {"city": "tok0"}}}]
    lines = [json.loads(x) for x in http.post("/api/chat", json={**body, "stream": True}).text.splitlines()]
    assert lines[0]["message"]["tool_calls"][0]["function"]["name"] == "weather"
    assert lines[-1]["done"] is True


def test_embed(http):
    r = http.post("/api/embed", json={"model": "nomic-embed-emu", "input": ["a b c", "d"]}).json()
    assert r["model"] == "nomic-embed-emu"
    assert [len(v) for v in r["embeddings"]] == [16, 16]
    assert math.isclose(sum(x * x for x in r["embeddings"][0]), 1.0, rel_tol=1e-9)
    assert r["prompt_eval_count"] == 4
    assert {"total_duration", "load_duration"} <= r.keys()
    single = http.post(
        "/api/embed", json={"model": "nomic-embed-emu", "input": "a b c", "dimensions": 4}
    ).json()
    assert len(single["embeddings"]) == 1 and len(single["embeddings"][0]) == 4
    legacy = http.post("/api/embeddings", json={"model": "nomic-embed-emu", "prompt": "a b c"}).json()
    assert legacy["embedding"] == pytest.approx(r["embeddings"][0])


def test_tags_version_root(http):
    models = http.get("/api/tags").json()["models"]
    assert models and {"name", "model", "modified_at", "size", "digest", "details"} <= models[0].keys()
    assert "version" in http.get("/api/version").json()
    assert http.get("/").text == "Ollama is running"


def test_errors(http):
    r = http.post("/api/chat", json={"model": "llama-emu@status=503", "messages": MESSAGES})
    assert r.status_code == 503 and isinstance(r.json()["error"], str)
    r = http.post("/api/chat", json={"messages": MESSAGES})
    assert (r.status_code, r.json()) == (400, {"error": "model is required"})
    r = http.post("/api/chat", json={"model": "llama-emu@frobnicate=1", "messages": MESSAGES})
    assert r.status_code == 400 and "'frobnicate'" in r.json()["error"]
    r = http.post("/api/chat", content=b"{nope")
    assert r.status_code == 400 and list(r.json()) == ["error"]

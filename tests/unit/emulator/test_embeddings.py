"""Embeddings: batch limits, refused inputs, determinism, and the /_emulator/calls log."""

from __future__ import annotations

import time
import uuid

import httpx
import openai
import pytest

from services.emulator import create_app
from services.emulator.common import CALLS_KEPT
from services.emulator.text import embedding

from .conftest import serve

TEXTS = ["the cat sat", "on the mat", "and purred", "loudly"]


@pytest.fixture
def oai(emulator_url):
    with openai.OpenAI(base_url=f"{emulator_url}/v1", api_key="x", max_retries=0) as c:
        yield c


@pytest.fixture
def http(emulator_url):
    with httpx.Client(base_url=emulator_url, timeout=10) as c:
        yield c


# --- OpenAI ---------------------------------------------------------------------------------------------


def test_openai_batch_equals_single_calls(oai):
    batch = oai.embeddings.create(model="text-embedding-emu", input=TEXTS, encoding_format="float")
    singles = [
        oai.embeddings.create(model="text-embedding-emu", input=t, encoding_format="float").data[0].embedding
        for t in TEXTS
    ]
    assert [d.embedding for d in batch.data] == singles
    assert [d.index for d in batch.data] == [0, 1, 2, 3]
    assert batch.data[0].embedding == pytest.approx(list(embedding(TEXTS[0], 16)))
    # base64 (the SDK's default) decodes to the same vectors, within float32 precision.
    decoded = oai.embeddings.create(model="text-embedding-emu", input=TEXTS)
    for got, want in zip(decoded.data, singles, strict=True):
        assert list(got.embedding) == pytest.approx(want, rel=1e-6)
    assert len(set(map(tuple, singles))) == 4


def test_openai_default_batch_limit_is_2048(oai):
    inputs = [f"t{i}" for i in range(2049)]
    assert (
        len(
            oai.embeddings.create(
                model="text-embedding-emu", input=inputs[:2048], encoding_format="float"
            ).data
        )
        == 2048
    )
    with pytest.raises(openai.BadRequestError) as info:
        oai.embeddings.create(model="text-embedding-emu", input=inputs)
    assert info.value.status_code == 400 and info.value.type == "invalid_request_error"
    assert info.value.param == "input" and "max number of inputs is 2048" in info.value.message


def test_openai_max_inputs_scenario(oai):
    assert len(oai.embeddings.create(model="text-embedding-emu@max_inputs=4", input=TEXTS).data) == 4
    with pytest.raises(openai.BadRequestError) as info:
        oai.embeddings.create(model="text-embedding-emu@max_inputs=3", input=TEXTS)
    assert "max number of inputs is 3" in info.value.message
    with pytest.raises(openai.BadRequestError):  # token arrays count per array
        oai.embeddings.create(model="text-embedding-emu@max_inputs=1", input=[[1, 2], [3]])
    assert len(oai.embeddings.create(model="text-embedding-emu@max_inputs=1", input=[1, 2, 3]).data) == 1


def test_openai_fail_input(oai):
    model = "text-embedding-emu@fail_input=and purred"
    with pytest.raises(openai.BadRequestError) as info:
        oai.embeddings.create(model=model, input=TEXTS)
    assert "input[2]" in info.value.message and info.value.param == "input"
    assert info.value.body == {
        "message": info.value.body["message"],
        "type": "invalid_request_error",
        "param": "input",
        "code": None,
    }
    ok = oai.embeddings.create(model=model, input=[TEXTS[0], TEXTS[1], TEXTS[3]], encoding_format="float")
    assert [d.embedding for d in ok.data] == [list(embedding(t, 16)) for t in (TEXTS[0], TEXTS[1], TEXTS[3])]
    with pytest.raises(openai.BadRequestError):  # the header works too
        oai.embeddings.create(
            model="text-embedding-emu",
            input=TEXTS[2],
            extra_headers={"x-emulator-scenario": "fail_input=and purred"},
        )


# --- Ollama ---------------------------------------------------------------------------------------------


def test_ollama_embed_shape_and_determinism(http):
    r = http.post("/api/embed", json={"model": "nomic-embed-emu", "input": TEXTS})
    body = r.json()
    assert r.status_code == 200
    assert set(body) == {"model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"}
    assert body["model"] == "nomic-embed-emu" and body["prompt_eval_count"] == 9
    assert isinstance(body["total_duration"], int) and body["total_duration"] > 0
    singles = [
        http.post("/api/embed", json={"model": "nomic-embed-emu", "input": t}).json()["embeddings"][0]
        for t in TEXTS
    ]
    assert body["embeddings"] == singles == [list(embedding(t, 16)) for t in TEXTS]


@pytest.mark.parametrize("empty", [{"input": []}, {"input": ""}, {}])
def test_ollama_embed_without_input_loads_only(http, empty):
    r = http.post("/api/embed", json={"model": "nomic-embed-emu", **empty})
    assert (r.status_code, r.json()) == (200, {"model": "nomic-embed-emu", "embeddings": []})


def test_ollama_embed_limits_and_refusals(http):
    many = [f"t{i}" for i in range(513)]
    assert len(http.post("/api/embed", json={"model": "e", "input": many[:512]}).json()["embeddings"]) == 512
    r = http.post("/api/embed", json={"model": "e", "input": many})
    assert r.status_code == 400 and list(r.json()) == ["error"] and "512" in r.json()["error"]
    r = http.post("/api/embed", json={"model": "e@max_inputs=2", "input": TEXTS[:3]})
    assert r.status_code == 400 and "maximum of 2" in r.json()["error"]
    r = http.post("/api/embed", json={"model": "e@fail_input=loudly", "input": TEXTS})
    assert r.status_code == 400 and "input[3]" in r.json()["error"]
    r = http.post("/api/embed", json={"model": "e@fail_input=loudly", "input": TEXTS[:3]})
    assert r.status_code == 200 and len(r.json()["embeddings"]) == 3
    r = http.post("/api/embeddings", json={"model": "e@fail_input=loudly", "prompt": "loudly"})
    assert r.status_code == 400 and "input[0]" in r.json()["error"]
    r = http.post("/api/embed", json={"model": "e", "input": ["a", 3]})
    assert (r.status_code, r.json()) == (400, {"error": "invalid input type"})


# --- /_emulator/calls -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_url():
    with serve() as url:
        yield url


@pytest.fixture
def own(own_url):
    with httpx.Client(base_url=own_url, timeout=10) as c:
        assert c.delete("/_emulator/calls").status_code == 200
        yield c


def test_call_log_records_each_embeddings_call(own):
    tag = uuid.uuid4().hex
    started = time.time()
    own.post(
        "/v1/embeddings", json={"model": "text-embedding-emu@max_inputs=5", "input": [f"{tag}-a", f"{tag}-b"]}
    )
    own.post("/api/embed", json={"model": "nomic-embed-emu", "input": f"{tag}-c"})
    own.post("/api/embed", json={"model": "nomic-embed-emu@fail_input=x", "input": ["x"]})
    own.post("/api/embeddings", json={"model": "nomic-embed-emu", "prompt": f"{tag}-d"})
    own.post("/v1/embeddings", json={"model": "e@status=429", "input": [[1, 2, 3]]})
    own.post(
        "/v1/chat/completions", json={"model": "gpt-emu", "messages": [{"role": "user", "content": "hi"}]}
    )
    calls = own.get("/_emulator/calls", params={"kind": "embeddings"}).json()
    assert [(c["path"], c["model"], c["inputs"], c["status"]) for c in calls] == [
        ("/v1/embeddings", "text-embedding-emu", [f"{tag}-a", f"{tag}-b"], 200),
        ("/api/embed", "nomic-embed-emu", [f"{tag}-c"], 200),
        ("/api/embed", "nomic-embed-emu", ["x"], 400),
        ("/api/embeddings", "nomic-embed-emu", [f"{tag}-d"], 200),
        ("/v1/embeddings", "e", [[1, 2, 3]], 429),
    ]
    assert all(c["kind"] == "embeddings" and started <= c["time"] <= time.time() for c in calls)
    everything = own.get("/_emulator/calls").json()  # kind left out: chat calls too
    assert [c for c in everything if c["kind"] == "embeddings"] == calls


def test_call_log_records_each_chat_call(own):
    tag = uuid.uuid4().hex
    said = [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"hi {tag}"}]
    own.post("/v1/chat/completions", json={"model": "gpt-emu", "messages": said})
    own.post("/v1/chat/completions", json={"model": "gpt-emu@status=503", "messages": said, "stream": True})
    own.post("/v1/messages", json={"model": "claude-emu", "max_tokens": 9, "messages": said[1:]})
    own.post("/api/chat", json={"model": "llama-emu", "messages": said, "stream": False})
    own.post("/v1/chat/completions", json={"model": "gpt-emu"})  # invalid: not recorded
    calls = own.get("/_emulator/calls", params={"kind": "chat"}).json()
    assert [(c["path"], c["model"], c["inputs"], c["status"]) for c in calls] == [
        ("/v1/chat/completions", "gpt-emu", [f"hi {tag}"], 200),
        ("/v1/chat/completions", "gpt-emu", [f"hi {tag}"], 503),
        ("/v1/messages", "claude-emu", [f"hi {tag}"], 200),
        ("/api/chat", "llama-emu", [f"hi {tag}"], 200),
    ]


def test_call_log_reset_and_bad_kind(own):
    own.post("/api/embed", json={"model": "e", "input": ["one"]})
    own.post("/api/embed", json={"model": "e", "input": ["two"]})
    assert own.delete("/_emulator/calls", params={"kind": "embeddings"}).json() == {"deleted": 2}
    assert own.get("/_emulator/calls", params={"kind": "embeddings"}).json() == []
    r = own.get("/_emulator/calls", params={"kind": "teleports"})
    assert r.status_code == 400 and "teleports" in r.json()["error"]
    # Invalid requests (no inputs to speak of) are not recorded.
    own.post("/v1/embeddings", json={"model": "e"})
    assert own.get("/_emulator/calls").json() == []


def test_call_log_is_bounded_and_per_app():
    app = create_app()
    assert app.state.calls.maxlen == CALLS_KEPT == 10_000
    assert create_app().state.calls is not app.state.calls

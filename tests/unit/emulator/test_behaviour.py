"""Scenario behaviour on the wire: latency, drops, hangs, failures, error shapes."""

from __future__ import annotations

import json
import time

import httpx
import pytest

MESSAGES = [{"role": "user", "content": "hello there"}]

# (path, body builder for a streaming request, content-chunk predicate on one raw line/frame)
STREAMING = {
    "openai": (
        "/v1/chat/completions",
        lambda m: {"model": m, "messages": MESSAGES, "stream": True},
        lambda line: line.startswith("data: {") and '"content":"' in line and '"role"' not in line,
    ),
    "anthropic": (
        "/v1/messages",
        lambda m: {"model": m, "messages": MESSAGES, "max_tokens": 99, "stream": True},
        lambda line: line.startswith("data: ") and '"text_delta"' in line,
    ),
    "ollama": (
        "/api/chat",
        lambda m: {"model": m, "messages": MESSAGES},
        lambda line: line.startswith("{") and '"done":false' in line,
    ),
}
NON_STREAMING = {
    "openai": ("/v1/chat/completions", lambda m: {"model": m, "messages": MESSAGES}),
    "anthropic": ("/v1/messages", lambda m: {"model": m, "messages": MESSAGES, "max_tokens": 99}),
    "ollama": ("/api/chat", lambda m: {"model": m, "messages": MESSAGES, "stream": False}),
}


@pytest.fixture
def http(emulator_url):
    with httpx.Client(base_url=emulator_url, timeout=10) as c:
        yield c


def test_healthz(http):
    assert http.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("provider", NON_STREAMING)
def test_ttfb_non_streaming(http, provider):
    path, build = NON_STREAMING[provider]
    started = time.monotonic()
    r = http.post(path, json=build("emu@ttfb_ms=150,tokens=1"))
    assert r.status_code == 200
    assert time.monotonic() - started >= 0.15


@pytest.mark.parametrize("provider", STREAMING)
def test_ttfb_and_chunk_delay_streaming(http, provider):
    path, build, is_content = STREAMING[provider]
    arrivals = []
    started = time.monotonic()
    with http.stream("POST", path, json=build("emu@ttfb_ms=100,tokens=5,chunk_delay_ms=30")) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if is_content(line):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 5
    assert arrivals[0] - started >= 0.1
    # Five content chunks are five writes with a delay before each later one.
    assert arrivals[-1] - started >= 0.1 + 4 * 0.03


def test_chunk_delay_non_streaming_emulates_generation_time(http):
    started = time.monotonic()
    http.post("/v1/chat/completions", json={"model": "emu@tokens=4,chunk_delay_ms=40", "messages": MESSAGES})
    assert time.monotonic() - started >= 4 * 0.04


@pytest.mark.parametrize("provider", STREAMING)
def test_disconnect_after_gives_incomplete_stream(http, provider):
    path, build, is_content = STREAMING[provider]
    for delay in (0, 10):
        lines = []
        with pytest.raises(httpx.RemoteProtocolError):
            with http.stream(
                "POST", path, json=build(f"emu@tokens=6,disconnect_after=2,chunk_delay_ms={delay}")
            ) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    lines.append(line)
        assert sum(map(is_content, lines)) == 2
        assert not any("[DONE]" in x or "message_stop" in x or '"done":true' in x for x in lines)
    assert http.get("/healthz").status_code == 200


@pytest.mark.parametrize("provider", NON_STREAMING)
def test_disconnect_non_streaming_closes_without_response(http, provider):
    path, build = NON_STREAMING[provider]
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(path, json=build("emu@disconnect_after=0"))


@pytest.mark.parametrize("provider", ["openai", "ollama"])
def test_hang_times_out_the_client(emulator_url, provider):
    path, build = NON_STREAMING[provider]
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=emulator_url, timeout=0.3) as c:
        c.post(path, json=build("emu@hang=1"))
    assert time.monotonic() - started >= 0.3
    with httpx.Client(base_url=emulator_url, timeout=5) as c:
        assert c.get("/healthz").status_code == 200


def test_fail_first_counts_per_key(http, unique_key):
    statuses = [
        http.post(
            "/api/chat",
            json={
                "model": f"emu@fail_first=2,status=429,key={unique_key}",
                "messages": MESSAGES,
                "stream": False,
            },
        ).status_code
        for _ in range(4)
    ]
    assert statuses == [429, 429, 200, 200]
    # Same key through another wire format shares the counter; a new key starts afresh.
    r = http.post(
        "/v1/chat/completions",
        json={"model": "emu", "messages": MESSAGES},
        headers={"x-emulator-scenario": f"fail_first=2,key={unique_key}"},
    )
    assert r.status_code == 200
    r = http.post(
        "/v1/chat/completions",
        json={"model": "emu", "messages": MESSAGES},
        headers={"x-emulator-scenario": f"fail_first=1,key={unique_key}-other"},
    )
    assert r.status_code == 500


def test_hang_first_hangs_the_first_calls_of_a_key(emulator_url, unique_key):
    model = f"emu@hang_first=1,key={unique_key},tokens=1"
    with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=emulator_url, timeout=0.3) as c:
        c.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES})
    with httpx.Client(base_url=emulator_url, timeout=5) as c:
        r = c.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES})
        assert r.status_code == 200  # the second call of the key is answered
        # fail_first keeps its own count under the same key
        r = c.post(
            "/v1/chat/completions", json={"model": f"emu@fail_first=1,key={unique_key}", "messages": MESSAGES}
        )
        assert r.status_code == 500


def test_retry_after_headers(http):
    r = http.post(
        "/v1/messages",
        json={"model": "emu@status=429,retry_after_ms=1500", "messages": MESSAGES, "max_tokens": 5},
    )
    assert r.status_code == 429
    assert (r.headers["retry-after-ms"], r.headers["retry-after"]) == ("1500", "2")


@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", "/v1/embeddings", "/v1/messages", "/api/chat", "/api/embed"]
)
def test_malformed_json_is_400_in_provider_shape(http, path):
    r = http.post(path, content=b'{"model": ', headers={"content-type": "application/json"})
    assert r.status_code == 400
    body = r.json()
    if path.startswith("/api/"):
        assert isinstance(body["error"], str)
    elif path == "/v1/messages":
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    else:
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["type"] == "invalid_request_error"


def test_openai_error_shape(http):
    r = http.post("/v1/chat/completions", json={"model": "emu@status=500", "messages": MESSAGES})
    assert r.status_code == 500
    assert r.json() == {
        "error": {
            "message": r.json()["error"]["message"],
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


def test_unknown_key_in_header_is_named(http):
    r = http.post(
        "/v1/chat/completions",
        json={"model": "emu", "messages": MESSAGES},
        headers={"x-emulator-scenario": "tokens=1,speed=9"},
    )
    assert r.status_code == 400 and "'speed'" in r.json()["error"]["message"]


def test_models_endpoint_shape_depends_on_caller(http):
    assert http.get("/v1/models").json()["object"] == "list"
    anthropic_shape = http.get("/v1/models", headers={"anthropic-version": "2023-06-01"}).json()
    assert anthropic_shape["has_more"] is False and anthropic_shape["data"][0]["type"] == "model"


def test_zero_tokens_stream_still_terminates(http):
    r = http.post(
        "/v1/chat/completions", json={"model": "emu@tokens=0", "messages": MESSAGES, "stream": True}
    )
    frames = [f for f in r.text.split("\n\n") if f]
    assert frames[-1] == "data: [DONE]"
    assert json.loads(frames[-2].removeprefix("data: "))["choices"][0]["finish_reason"] == "stop"


async def test_scenario_from_the_body_field_header_wins(emulator_url):
    """A gateway passes unknown request fields through, so tests can pick behaviour per request."""
    import httpx as _httpx

    async with _httpx.AsyncClient(base_url=emulator_url) as c:
        r = await c.post(
            "/v1/chat/completions",
            json={
                "model": "gpt-emu",
                "emulator_scenario": "tokens=3",
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        assert r.json()["usage"]["completion_tokens"] == 3
        r = await c.post(
            "/v1/messages",
            json={
                "model": "c",
                "max_tokens": 50,
                "emulator_scenario": "status=429",
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        assert r.status_code == 429 and r.json()["type"] == "error"
        r = await c.post(
            "/api/chat",
            headers={"x-emulator-scenario": "tokens=2"},
            json={
                "model": "l",
                "stream": False,
                "emulator_scenario": "tokens=5",
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        assert r.json()["eval_count"] == 2

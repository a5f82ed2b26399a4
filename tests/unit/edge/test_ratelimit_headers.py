"""Rate limits and budgets at the edge: x-ratelimit-* on whole answers, in a stream's head
(before its first SSE byte) and on 429s with Retry-After; 402 with the remaining budget; the
native body naming the client id; the API key's name on the request event."""

from __future__ import annotations

import httpx
import orjson
import pytest

from services.client.client import raise_for
from services.contracts.errors import BudgetExceeded, RateLimited
from services.contracts.events import EmbedRequested, RateLimitInfo, ResultProduced
from services.edge.app import create_app
from services.edge.errors import error_headers, ratelimit_headers

from .conftest import AUTH, AsgiCall, chunks_for, ok_result
from .test_embeddings import EmbedPipeline, embed_result

CHAT = {"model": "demo-openai", "messages": [{"role": "user", "content": "hi"}]}
INFO = RateLimitInfo(
    limit_requests=5,
    remaining_requests=3,
    reset_requests_s=41.5,
    limit_tokens=2000,
    remaining_tokens=1733,
    reset_tokens_s=41.5,
)
HEADERS = {
    "x-ratelimit-limit-requests": "5",
    "x-ratelimit-remaining-requests": "3",
    "x-ratelimit-reset-requests": "41.500s",
    "x-ratelimit-limit-tokens": "2000",
    "x-ratelimit-remaining-tokens": "1733",
    "x-ratelimit-reset-tokens": "41.500s",
}


def limited() -> RateLimited:
    return RateLimited(
        "rate limit of 3 requests per minute reached for user limited-user; retry in 12.3 s",
        details={
            "retry_after_s": 12.3,
            "scope": "user limited-user",
            "ratelimit": {"limit_requests": 3, "remaining_requests": 0, "reset_requests_s": 12.3},
        },
    )


def subset(headers, want: dict[str, str]) -> bool:
    got = {k.lower(): v for k, v in headers.items()}
    return all(got.get(k) == v for k, v in want.items())


def test_header_values():
    assert ratelimit_headers(None) == []
    assert ratelimit_headers(RateLimitInfo(limit_tokens=10, remaining_tokens=0, reset_tokens_s=60.0)) == [
        (b"x-ratelimit-limit-tokens", b"10"),
        (b"x-ratelimit-remaining-tokens", b"0"),
        (b"x-ratelimit-reset-tokens", b"60s"),
    ]
    h = dict(error_headers(limited()))
    assert (h[b"retry-after"], h[b"retry-after-ms"]) == (b"13", b"12300")
    assert h[b"x-ratelimit-remaining-requests"] == b"0"
    assert error_headers(BudgetExceeded("no")) == []


async def test_a_whole_answer_carries_the_binding_numbers(http, pipeline):
    pipeline.answer = lambda req: ok_result(req).model_copy(update={"ratelimit": INFO})
    r = await http.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 200 and subset(r.headers, HEADERS)
    pipeline.answer = ok_result  # an ungoverned tenant: no such headers
    r = await http.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert not any(k.startswith("x-ratelimit") for k in r.headers)


async def test_a_stream_has_them_in_its_head_before_the_first_sse_byte(app, pipeline):
    def chunks(req):
        out = chunks_for(req, ["a", "b"])
        out[0] = out[0].model_copy(update={"ratelimit": INFO})
        return out

    pipeline.chunks = chunks
    call = AsgiCall(app, "POST", "/v1/chat/completions", orjson.dumps(CHAT | {"stream": True}))
    task = call.start()
    await call.wait_for(lambda: call.complete)
    await task
    head = next(i for i, m in enumerate(call.sent) if m["type"] == "http.response.start")
    first_body = next(i for i, m in enumerate(call.sent) if m["type"] == "http.response.body")
    assert head < first_body and call.status == 200
    assert subset({k.decode(): v.decode() for k, v in call.headers.items()}, HEADERS)


async def test_a_rate_limited_request_is_429_with_retry_after(http, pipeline):
    pipeline.answer = lambda req: limited()
    r = await http.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "13" and r.headers["retry-after-ms"] == "12300"
    assert (
        r.headers["x-ratelimit-limit-requests"] == "3" and r.headers["x-ratelimit-remaining-requests"] == "0"
    )
    err = r.json()["error"]
    assert (err["type"], err["code"]) == ("rate_limit_error", "rate_limited")
    assert err["details"] == {
        "retry_after_s": 12.3,
        "scope": "user limited-user",
    }  # the numbers went to headers


async def test_a_stream_refused_before_any_chunk_is_a_429_not_a_200_stream(app, pipeline):
    pipeline.chunks = lambda req: [limited()]
    call = AsgiCall(app, "POST", "/v1/chat/completions", orjson.dumps(CHAT | {"stream": True}))
    task = call.start()
    await call.wait_for(lambda: call.complete)
    await task
    assert call.status == 429 and call.headers[b"retry-after"] == b"13"
    assert call.headers[b"x-ratelimit-remaining-requests"] == b"0"
    assert orjson.loads(call.data)["error"]["code"] == "rate_limited"


async def test_native_chat_names_the_client_id(http, pipeline):
    pipeline.answer = lambda req: limited()
    r = await http.post("/v1/chat", json=CHAT | {"client_id": "svc-a"}, headers=AUTH)
    assert r.status_code == 429 and r.headers["retry-after"] == "13"
    err = r.json()["error"]
    assert err["type"] == "rate_limit_exceeded"
    assert err["message"].startswith("rate limit exceeded for client_id svc-a: rate limit of 3 requests")


async def test_budget_exceeded_is_402_with_what_remains(http, pipeline):
    pipeline.answer = lambda req: BudgetExceeded(
        "the daily budget of tenant budgeted (USD 0.001 for 2026-11-24) has USD 0.000040 left",
        details={
            "budget_usd": 0.001,
            "remaining_usd": 0.00004,
            "max_cost_usd": 0.0001,
            "period": "day:2026-11-24",
            "scope": "tenant",
        },
    )
    r = await http.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 402
    err = r.json()["error"]
    assert err["code"] == "budget_exceeded" and err["details"]["remaining_usd"] == 0.00004
    assert "retry-after" not in r.headers


async def test_the_api_key_name_reaches_the_request_event_and_never_the_key(http, pipeline):
    r = await http.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 200
    req = pipeline.requests[-1]
    assert req.api_key == "demo key" and "api_key" not in req.params.extra
    assert "sk-llmgw-demo" not in req.model_dump_json()


def test_an_error_result_keeps_its_numbers_for_the_edge():
    result = ResultProduced(
        request_id="r",
        tenant_id="t",
        status="error",
        ratelimit=INFO,
        error={"code": "provider_error", "message": "upstream 500"},
    )
    with pytest.raises(Exception) as exc:
        raise_for(result)
    assert exc.value.details["ratelimit"]["remaining_requests"] == 3  # type: ignore[attr-defined]
    assert ratelimit_headers(exc.value.details["ratelimit"])  # type: ignore[attr-defined]


async def test_embeddings_answer_with_the_numbers_too(edge_settings, demo_config):
    pipe = EmbedPipeline(answer=lambda req: embed_result(req).model_copy(update={"ratelimit": INFO}))
    app = create_app(edge_settings, config=demo_config, pipeline=pipe)
    await app.startup()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as http:
        r = await http.post("/v1/embeddings", json={"model": "demo-embed", "input": "x"}, headers=AUTH)
    assert r.status_code == 200 and subset(r.headers, HEADERS)
    assert isinstance(pipe.requests[-1], EmbedRequested) and pipe.requests[-1].api_key == "demo key"

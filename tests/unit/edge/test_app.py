"""The ASGI app on a fake pipeline: routing, auth, body limit, request ids, headers, models,
the native endpoint, lifespan."""

from __future__ import annotations

import dataclasses

import httpx
import orjson
import pytest

from services.contracts.errors import ModelNotFound, RateLimited
from services.edge.app import create_app
from services.edge.settings import EdgeSettings

from .conftest import AUTH, RESTRICTED_KEY, FakePipeline
from .openai_spec import check

CHAT = {"model": "demo-openai", "messages": [{"role": "user", "content": "hi"}]}


async def test_chat_completion(http, pipeline):
    r = await http.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    check("CreateChatCompletionResponse", r.json())
    [req] = pipeline.requests
    assert r.json()["id"] == f"chatcmpl-{req.request_id}" == f"chatcmpl-{r.headers['x-request-id']}"
    assert (req.tenant_id, req.user_id) == ("demo", "demo-user")


async def test_overhead_header_excludes_provider_time(http):
    r = await http.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    overhead = float(r.headers["x-llmgw-overhead-ms"])
    assert 0 <= overhead < 1000


async def test_request_id_accepted_and_echoed(http, pipeline):
    r = await http.post("/v1/chat/completions", json=CHAT, headers={**AUTH, "x-request-id": "req-42.a"})
    assert r.headers["x-request-id"] == "req-42.a" and pipeline.requests[0].request_id == "req-42.a"
    assert r.json()["id"] == "chatcmpl-req-42.a"
    r = await http.get("/v1/models", headers={**AUTH, "x-request-id": "m-1"})
    assert r.headers["x-request-id"] == "m-1"


async def test_bad_request_id_is_400(http):
    r = await http.post("/v1/chat/completions", json=CHAT, headers={**AUTH, "x-request-id": "has space"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-request-id"
    assert r.headers["x-request-id"] and r.headers["x-request-id"] != "has space"


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer sk-wrong"}, {"authorization": "Basic abc"}, {"authorization": "Bearer "}],
)
async def test_missing_or_unknown_key_is_401(http, headers, pipeline):
    for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("POST", "/v1/chat")):
        r = await http.request(method, path, json=CHAT, headers=headers)
        assert r.status_code == 401, (method, path)
        assert r.json()["error"]["type"] == "authentication_error"
    assert not pipeline.requests


async def test_tenant_comes_from_the_key_only(http, pipeline):
    body = CHAT | {"tenant_id": "demo", "user_id": "someone-else"}
    r = await http.post(
        "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {RESTRICTED_KEY}"}
    )
    assert r.status_code == 200
    [req] = pipeline.requests
    assert (req.tenant_id, req.user_id) == ("restricted", "restricted-user")
    assert "tenant_id" not in req.params.extra and "user_id" not in req.params.extra


async def test_unknown_fields_reach_params_extra(http, pipeline):
    r = await http.post(
        "/v1/chat/completions", json=CHAT | {"logprobs": True, "vendor": {"x": 1}}, headers=AUTH
    )
    assert r.status_code == 200
    assert pipeline.requests[0].params.extra == {"logprobs": True, "vendor": {"x": 1}}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (orjson.dumps(CHAT | {"temperature": 5}), "temperature"),
        (orjson.dumps(CHAT | {"messages": [{"role": "robot", "content": "x"}]}), "messages[0].role"),
        (orjson.dumps({"messages": CHAT["messages"]}), "model"),
    ],
)
async def test_bad_bodies_are_400_naming_the_field(http, body, param, pipeline):
    r = await http.post("/v1/chat/completions", content=body, headers=AUTH)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "validation_error" and err["type"] == "invalid_request_error"
    assert err["param"] == param
    if param:
        assert param in err["message"]
    assert not pipeline.requests


async def test_body_limit_413(edge_settings, demo_config, pipeline):
    app = create_app(
        dataclasses.replace(edge_settings, max_body_bytes=1000), config=demo_config, pipeline=pipeline
    )
    await app.startup()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as http:
        big = CHAT | {"messages": [{"role": "user", "content": "x" * 2000}]}
        r = await http.post("/v1/chat/completions", json=big, headers=AUTH)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "payload_too_large" and "1000" in r.json()["error"]["message"]

        async def chunked():  # no content-length: the limit applies while reading
            for _ in range(5):
                yield b"x" * 300

        r = await http.post("/v1/chat/completions", content=chunked(), headers=AUTH)
        assert r.status_code == 413
        r = await http.post("/v1/chat/completions", json=CHAT, headers=AUTH)
        assert r.status_code == 200
    assert len(pipeline.requests) == 1


async def test_unknown_route_and_method(http):
    r = await http.get("/v1/nothing", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["message"] == "Invalid URL (GET /v1/nothing)"
    r = await http.get("/v1/chat/completions", headers=AUTH)
    assert r.status_code == 405 and r.headers["allow"] == "POST"


async def test_models_list_only_the_tenants_models(http, demo_config, pipeline):
    r = await http.get("/v1/models", headers=AUTH)
    check("ListModelsResponse", r.json())
    ids = [m["id"] for m in r.json()["data"]]
    assert ids == sorted(demo_config.models) and "demo-routed" in ids  # tenant demo may use every model
    openai_model = next(m for m in r.json()["data"] if m["id"] == "demo-openai")
    assert openai_model["context_window"] == 128000 and openai_model["max_output_tokens"] == 16384
    assert "json_schema" in openai_model["capabilities"]
    assert (
        openai_model["pricing"]["input_per_mtok"] == 0.15
        and openai_model["pricing"]["output_per_mtok"] == 0.6
    )

    restricted = {"authorization": f"Bearer {RESTRICTED_KEY}"}
    r = await http.get("/v1/models", headers=restricted)
    allowed = sorted(demo_config.tenants["restricted"].allowed_models)
    assert [m["id"] for m in r.json()["data"]] == allowed and "demo-anthropic" not in allowed
    r = await http.get("/v1/models/demo-anthropic", headers=restricted)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = await http.get("/v1/models/demo-openai", headers=restricted)
    assert r.status_code == 200
    check("Model", r.json())
    # every answer came from a models.list request for the caller's tenant
    assert pipeline.model_lists == [
        ("demo", None),
        ("restricted", None),
        ("restricted", "demo-anthropic"),
        ("restricted", "demo-openai"),
    ]


async def test_native_chat(http, pipeline):
    body = {
        "client_id": "svc-a",
        "model": "demo-openai",
        "messages": CHAT["messages"],
        "metadata": {"request_id": "native-1"},
    }
    r = await http.post("/v1/chat", json=body, headers={**AUTH, "x-request-id": "ignored-1"})
    assert r.status_code == 200
    assert r.json() == {
        "id": "native-1",
        "model": "demo-openai",
        "provider": "emulator-openai",
        "fallback_used": False,
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        "message": {"role": "assistant", "content": "hello there"},
    }
    assert r.headers["x-request-id"] == "native-1"
    [req] = pipeline.requests
    assert (req.request_id, req.client_id, req.metadata) == ("native-1", "svc-a", {"request_id": "native-1"})
    assert float(r.headers["x-llmgw-overhead-ms"]) >= 0


async def test_native_errors(http, pipeline):
    pipeline.answer = lambda req: RateLimited("tenant 'demo' is over 10 requests/minute")
    body = {"client_id": "svc-a", "model": "demo-openai", "messages": CHAT["messages"]}
    r = await http.post("/v1/chat", json=body, headers=AUTH)
    assert r.status_code == 429
    err = r.json()["error"]
    assert (
        set(err) == {"type", "message"} and err["type"] == "rate_limit_exceeded" and "svc-a" in err["message"]
    )

    pipeline.answer = lambda req: ModelNotFound("model 'x' does not exist")
    r = await http.post("/v1/chat", json=body, headers=AUTH)
    assert r.status_code == 404 and r.json() == {
        "error": {"type": "model_not_found", "message": "model 'x' does not exist"}
    }

    r = await http.post("/v1/chat", json=body, headers={"authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


async def test_health_and_readiness(edge_settings, demo_config):
    pipeline = FakePipeline()
    app = create_app(edge_settings, config=demo_config, pipeline=pipeline)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 503
        await app.startup()
        assert (await http.get("/readyz")).status_code == 200
        await app.shutdown()
        assert (await http.get("/readyz")).status_code == 503
    assert pipeline.closed


async def test_lifespan_protocol(edge_settings, demo_config):
    app = create_app(edge_settings, config=demo_config, pipeline=FakePipeline())
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent = []

    async def receive():
        return next(messages)

    async def send(m):
        sent.append(m["type"])

    await app({"type": "lifespan"}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_settings_from_env():
    s = EdgeSettings.from_env(
        {
            "LLMGW_EDGE_MAX_BODY_BYTES": "1024",
            "LLMGW_EDGE_KEEPALIVE_S": "2.5",
            "LLMGW_EDGE_PORT": "9999",
            "LLMGW_EDGE_WORKERS": "3",
        }
    )
    assert (s.max_body_bytes, s.keepalive_s, s.runtime.edge_port, s.runtime.edge_workers) == (
        1024,
        2.5,
        9999,
        3,
    )
    assert EdgeSettings.from_env({}).max_body_bytes == 8 * 1024 * 1024
    assert EdgeSettings.from_env({}).keepalive_s == 10.0
    with pytest.raises(ValueError, match="LLMGW_EDGE_MAX_BODY_BYTES"):
        EdgeSettings.from_env({"LLMGW_EDGE_MAX_BODY_BYTES": "0"})


def test_router_matches_exact_and_trailing_parameter():
    from services.edge.asgi import Route, Router
    from services.edge.errors import HTTPError
    from services.edge.handlers import ROUTES

    router = Router(ROUTES)
    route, params = router.match("GET", "/v1/models/org/some-model")
    assert route.path == "/v1/models/{model}" and params == {"model": "org/some-model"}
    assert router.match("GET", "/v1/models")[0].path == "/v1/models"
    with pytest.raises(HTTPError) as exc:
        router.match("DELETE", "/v1/models/x")
    assert exc.value.status == 405
    with pytest.raises(HTTPError):
        router.match("GET", "/v1/models/")

    async def handler(edge, req):  # a new capability is one more Route
        return None

    extended = Router([*ROUTES, Route("POST", "/v1/embeddings", handler, ROUTES[0].errors, body=True)])
    assert extended.match("POST", "/v1/embeddings")[0].handler is handler

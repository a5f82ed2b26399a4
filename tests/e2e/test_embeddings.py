"""Embeddings over the whole stack: the SDK and the edge (official ``openai`` SDK) on both wire
formats, usage events, and micro-batching checked at the emulator, which lists the inputs each
provider call carried (``GET /_emulator/calls?kind=embeddings``): tenants never share a call,
and a refused batch is retried one request at a time.

Batches form when requests reach one executor within the 5 ms window; the stack runs two
executors, so a burst may happen not to merge. Tests that need a merged call send bursts until
one merged (a few at most), and check every burst's outcome."""

from __future__ import annotations

import asyncio
import json
import struct

import httpx
import openai
import pytest

from services.contracts.errors import GatewayError
from services.contracts.events import new_id
from services.emulator.text import embedding as emulator_vector
from services.executor.providers._embeddings import from_base64
from tests.unit.edge.openai_spec import check

from .helpers import TopicTail

DEMO_KEY = "sk-llmgw-demo"
ALIASES = ["demo-embed", "demo-embed-ollama"]
DIMS = 16  # the emulator's default
BURSTS = 6


def float32(values) -> list[float]:
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


def expected(text: str, dims: int = DIMS) -> list[float]:
    return list(emulator_vector(text, dims))


@pytest.fixture(scope="module")
def client(edge_url) -> openai.OpenAI:
    return openai.OpenAI(api_key=DEMO_KEY, base_url=f"{edge_url}/v1", max_retries=0, timeout=30)


async def provider_calls(emulator_url: str, tag: str) -> list[dict]:
    """The emulator's embeddings calls carrying an input that contains ``tag``."""
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(f"{emulator_url}/_emulator/calls", params={"kind": "embeddings"})
    r.raise_for_status()
    return [c for c in r.json() if any(tag in str(i) for i in c["inputs"])]


# --- the SDK ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ALIASES)
async def test_sdk_embeds_on_each_wire_format(gw, alias):
    texts = ["kafka partitions keep order", "within a key"]
    r = await gw.embed(model=alias, input=texts)

    assert r.status == "ok" and r.operation == "embed" and r.alias == alias
    assert r.output is not None and r.output.kind == "embeddings"
    assert [e.index for e in r.output.data] == [0, 1]
    assert [e.embedding for e in r.output.data] == [expected(t) for t in texts]
    assert r.usage.prompt_tokens == r.usage.total_tokens == 7  # the emulator counts words
    assert r.usage.units == {"inputs": 2}
    assert r.provider in ("emulator-openai", "emulator-ollama") and r.latency.provider_ms > 0


@pytest.mark.parametrize("alias", ALIASES)
async def test_sdk_dimensions_and_base64(gw, alias):
    text = "one text"
    short = await gw.embed(model=alias, input=text, dimensions=8)
    assert short.output.data[0].embedding == expected(text, 8)
    b64 = await gw.embed(model=alias, input=[text], encoding_format="base64")
    vector = b64.output.data[0].embedding
    assert isinstance(vector, str)
    assert from_base64(vector) == float32(expected(text)), (
        "base64 is little-endian float32 of the same vector"
    )


async def test_embed_usage_event_is_priced_per_token(gw, stack_settings):
    rid = new_id()
    async with TopicTail(
        stack_settings.bootstrap_servers, f"{stack_settings.topic_prefix}llm.usage"
    ) as usage:
        await gw.embed(model="demo-embed", input=["three word text", "two words"], request_id=rid)
        recs = await usage.until(lambda rs: any(rid.encode() in r.value for r in rs))
    [event] = [json.loads(r.value) for r in recs if rid.encode() in r.value]
    assert event["operation"] == "embed" and event["status"] == "ok" and event["alias"] == "demo-embed"
    assert event["prompt_tokens"] == event["total_tokens"] == 5 and event["units"] == {"inputs": 2}
    assert event["cost_usd"] == pytest.approx(5 * 0.02 / 1_000_000)


async def test_a_chat_model_is_no_embeddings_model(gw):
    with pytest.raises(GatewayError) as err:
        await gw.embed(model="demo-openai", input="x")
    assert err.value.code == "capability_not_supported" and "embeddings" in err.value.message


async def test_total_ms_bounds_an_embed_request(gw):
    with pytest.raises(GatewayError) as err:
        await gw.embed(model="demo-embed", input="slow", total_ms=300, emulator_scenario="hang=1")
    assert err.value.code == "provider_timeout" and "total_ms=300" in err.value.message


async def test_a_caller_giving_up_cancels_the_embed_request(gw, stack_settings):
    rid = new_id()
    async with TopicTail(
        stack_settings.bootstrap_servers, f"{stack_settings.topic_prefix}llm.usage"
    ) as usage:
        with pytest.raises(GatewayError) as err:
            await gw.embed(
                model="demo-embed",
                input="never answered",
                request_id=rid,
                timeout_s=1,
                emulator_scenario="hang=1",
            )
        assert err.value.code == "gateway_timeout"
        recs = await usage.until(lambda rs: any(rid.encode() in r.value for r in rs))
    [event] = [json.loads(r.value) for r in recs if rid.encode() in r.value]
    assert (
        event["status"] == "cancelled"
        and event["operation"] == "embed"
        and event["error_code"] == "cancelled"
    )


# --- the edge, with the official SDK ------------------------------------------------------------------


@pytest.mark.parametrize("alias", ALIASES)
def test_openai_sdk_default_asks_base64_and_decodes_it(client, alias):
    texts = ["alpha beta", "gamma"]
    out = client.embeddings.create(model=alias, input=texts)  # the SDK sends encoding_format=base64
    assert out.model == alias and out.object == "list"
    assert [d.embedding for d in out.data] == [float32(expected(t)) for t in texts]
    assert out.usage.prompt_tokens == out.usage.total_tokens == 3


@pytest.mark.parametrize("alias", ALIASES)
def test_openai_sdk_float_and_base64(client, alias):
    raw = client.embeddings.with_raw_response.create(
        model=alias, input="alpha beta", encoding_format="float", dimensions=4
    )
    check("CreateEmbeddingResponse", raw.http_response.json())
    assert raw.parse().data[0].embedding == expected("alpha beta", 4)
    assert float(raw.headers["x-llmgw-overhead-ms"]) >= 0

    b64 = client.embeddings.create(model=alias, input="alpha beta", encoding_format="base64")
    assert isinstance(b64.data[0].embedding, str), "asked explicitly: the SDK leaves the string alone"
    assert from_base64(b64.data[0].embedding) == float32(expected("alpha beta"))


def test_openai_sdk_token_arrays_are_a_clear_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="demo-embed", input=[[1212, 318, 257]])
    assert "token arrays are not supported" in err.value.message


# --- micro-batching --------------------------------------------------------------------------------------


async def test_batches_never_mix_tenants(gw, restricted_gw, emulator_url):
    tag = new_id()[:12]
    clients = {"demo": gw, "restricted": restricted_gw}
    merged = False
    for burst in range(BURSTS):
        texts = {t: [f"{t}-{tag}-{burst}-{i}" for i in range(8)] for t in clients}
        calls = [clients[t].embed(model="demo-embed", input=text) for t in clients for text in texts[t]]
        results = await asyncio.gather(*calls)
        assert [r.output.data[0].embedding for r in results] == [
            expected(x) for t in clients for x in texts[t]
        ]
        seen = await provider_calls(emulator_url, f"-{tag}-{burst}-")
        assert sorted(i for c in seen for i in c["inputs"]) == sorted(x for t in clients for x in texts[t])
        for c in seen:
            tenants = {i.split("-", 1)[0] for i in c["inputs"]}
            assert len(tenants) == 1, f"one provider call carried two tenants' inputs: {c['inputs']}"
        merged = merged or any(len(c["inputs"]) > 1 for c in seen)
        if merged:
            break
    assert merged, f"no burst of {BURSTS} produced a batch: micro-batching is not merging requests"


async def test_a_refused_batch_gives_each_request_its_own_answer(gw, emulator_url):
    tag = new_id()[:12]
    isolated = False
    for burst in range(BURSTS):
        bad = f"refuse-{tag}-{burst}"
        inputs = [[f"ok-{tag}-{burst}-{i}"] for i in range(6)]
        inputs[2] = [f"ok-{tag}-{burst}-2a", bad]
        calls = [
            gw.embed(model="demo-embed", input=text, emulator_scenario=f"fail_input={bad}") for text in inputs
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)

        for i, (text, r) in enumerate(zip(inputs, results, strict=True)):
            if i == 2:
                assert isinstance(r, GatewayError) and r.code == "provider_error", r
                assert "fail_input" in r.message and r.details["upstream_status"] == 400
            else:
                assert not isinstance(r, BaseException), r
                assert [e.embedding for e in r.output.data] == [expected(t) for t in text]
        seen = await provider_calls(emulator_url, f"-{tag}-{burst}")
        refused = [c for c in seen if c["status"] == 400]
        assert all(bad in c["inputs"] for c in refused), "only calls carrying the refused input fail"
        assert [c["inputs"] for c in refused if len(c["inputs"]) == 2] == [inputs[2]], (
            "the refusing request was retried alone"
        )
        if any(len(c["inputs"]) > 2 for c in refused):  # a merged batch was refused, then split
            isolated = True
            break
    assert isolated, f"no burst of {BURSTS} merged the refused input with others"


async def test_a_batch_over_the_providers_limit_is_split_back(gw, emulator_url):
    """``max_inputs=2``: a merged call of three or more inputs is refused; alone, each request
    succeeds. Eight requests a burst, so that a merge of three happens even on a busy machine."""
    tag = new_id()[:12]
    for burst in range(BURSTS):
        texts = [f"lim-{tag}-{burst}-{i}" for i in range(8)]
        results = await asyncio.gather(
            *(gw.embed(model="demo-embed", input=t, emulator_scenario="max_inputs=2") for t in texts)
        )
        assert [r.output.data[0].embedding for r in results] == [expected(t) for t in texts]
        seen = await provider_calls(emulator_url, f"lim-{tag}-{burst}-")
        if any(c["status"] == 400 for c in seen):
            assert all(len(c["inputs"]) > 2 for c in seen if c["status"] == 400)
            return
    pytest.fail(f"no burst of {BURSTS} merged three requests into one call")


async def test_an_embeddings_fallback_reaches_http_callers(edge_url):
    body = {
        "model": "demo-embed",
        "input": "fall back",
        "fallbacks": ["demo-embed-ollama"],
        "emulator_scenario": f"fail_first=1,status=500,key={new_id()}",
    }
    async with httpx.AsyncClient(base_url=edge_url, timeout=30) as http:
        r = await http.post("/v1/embeddings", headers={"authorization": "Bearer sk-llmgw-demo"}, json=body)
    assert r.status_code == 200, r.text
    assert r.headers["x-llmgw-fallback"] == "demo-embed/emulator-openai -> demo-embed-ollama/emulator-ollama"
    assert r.json()["model"] == "demo-embed-ollama" and len(r.json()["data"]) == 1  # the alias that answered

"""``POST /v1/embeddings`` in-process on a fake pipeline: body checks, the request event, the
answer in OpenAI's shape (validated against OpenAI's published spec), errors."""

from __future__ import annotations

import dataclasses

import pytest

from services.client import GatewayClient
from services.contracts.errors import CapabilityNotSupported, ValidationError
from services.contracts.events import (
    Embedding,
    EmbeddingsOutput,
    EmbedRequested,
    Latency,
    ResultProduced,
    Usage,
)
from services.edge.api.embeddings import embeddings_json, parse_embeddings
from services.edge.pipeline import EdgeClient
from services.executor.providers._embeddings import from_base64, to_base64

from .conftest import AUTH, FakePipeline
from .openai_spec import check

VECTORS = [[0.25, -0.5, 0.125], [1.0, 0.0, -1.0]]


def embed_result(req: EmbedRequested) -> ResultProduced:
    def vec(i: int):
        v = VECTORS[i % 2]
        return to_base64(v) if req.encoding_format == "base64" else v

    return ResultProduced(
        request_id=req.request_id,
        tenant_id=req.tenant_id,
        status="ok",
        operation="embed",
        output=EmbeddingsOutput(data=[Embedding(index=i, embedding=vec(i)) for i in range(len(req.input))]),
        alias=req.model,
        provider="emulator-openai",
        model="text-embedding-emu",
        usage=Usage(prompt_tokens=7, total_tokens=7, units={"inputs": len(req.input)}),
        latency=Latency(total_ms=3.0, provider_ms=2.0),
    )


@dataclasses.dataclass
class EmbedPipeline(FakePipeline):
    build_embed = GatewayClient.build_embed
    _common = GatewayClient._common
    embed_request = EdgeClient.embed_request


@pytest.fixture
def pipeline() -> EmbedPipeline:
    return EmbedPipeline(answer=embed_result)


# --- request bodies -------------------------------------------------------------------------------


def test_a_string_input_is_a_list_of_one():
    call = parse_embeddings({"model": "demo-embed", "input": "hello"})
    assert call.input == ["hello"] and call.encoding_format == "float" and call.dimensions is None


def test_fields_typed_gateway_and_passed_through():
    call = parse_embeddings(
        {
            "model": "demo-embed",
            "input": ["a", "b"],
            "dimensions": 8,
            "encoding_format": "base64",
            "user": "end-user-7",
            "vendor_knob": {"x": 1},
            "metadata": {"conversation_id": "c1"},
            "client_id": "svc",
            "total_ms": 900,
            "tenant_id": "other",
            "user_id": "mallory",
        }
    )
    assert (call.input, call.dimensions, call.encoding_format) == (["a", "b"], 8, "base64")
    assert call.fields == {"metadata": {"conversation_id": "c1"}, "client_id": "svc", "total_ms": 900}
    assert call.extra == {"user": "end-user-7", "vendor_knob": {"x": 1}}


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"input": "x"}, "model", "required"),
        ({"model": "demo-embed"}, "input", "required"),
        ({"model": "demo-embed", "input": ""}, "input", "empty string"),
        ({"model": "demo-embed", "input": []}, "input", "non-empty list"),
        ({"model": "demo-embed", "input": ["ok", ""]}, "input[1]", "empty string"),
        ({"model": "demo-embed", "input": ["ok", {"text": "x"}]}, "input[1]", "must be a string"),
        ({"model": "demo-embed", "input": [1212, 318]}, "input", "token arrays are not supported"),
        ({"model": "demo-embed", "input": [[1212, 318]]}, "input", "token arrays are not supported"),
        ({"model": "demo-embed", "input": "x", "dimensions": 0}, "dimensions", "positive integer"),
        ({"model": "demo-embed", "input": "x", "dimensions": "8"}, "dimensions", "positive integer"),
        ({"model": "demo-embed", "input": "x", "dimensions": True}, "dimensions", "positive integer"),
        (
            {"model": "demo-embed", "input": "x", "encoding_format": "hex"},
            "encoding_format",
            "'float' or 'base64'",
        ),
        ({"model": "demo-embed", "input": "x", "total_ms": -1}, "total_ms", "positive integer"),
    ],
)
def test_bad_bodies_name_the_field(body, param, says):
    with pytest.raises(ValidationError) as err:
        parse_embeddings(body)
    assert err.value.param == param and says in err.value.message


def test_answer_in_openai_shape():
    req = EmbedRequested(request_id="r1", tenant_id="demo", model="demo-embed", input=["a", "b"])
    body = embeddings_json(embed_result(req), "demo-embed")
    check("CreateEmbeddingResponse", body)
    assert body == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": VECTORS[0]},
            {"object": "embedding", "index": 1, "embedding": VECTORS[1]},
        ],
        "model": "demo-embed",
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }


# --- over HTTP ------------------------------------------------------------------------------------


async def test_embeddings_over_http(http, pipeline):
    body = {"model": "demo-embed", "input": ["a", "b"], "dimensions": 3, "user": "end-user-7"}
    check("CreateEmbeddingRequest", body)
    r = await http.post("/v1/embeddings", json=body, headers=AUTH | {"x-request-id": "emb-1"})

    assert r.status_code == 200, r.text
    check("CreateEmbeddingResponse", r.json())
    assert [d["embedding"] for d in r.json()["data"]] == VECTORS
    assert r.headers["x-request-id"] == "emb-1" and float(r.headers["x-llmgw-overhead-ms"]) >= 0
    [event] = pipeline.requests
    assert isinstance(event, EmbedRequested)
    assert (event.request_id, event.tenant_id, event.user_id) == ("emb-1", "demo", "demo-user")
    assert (event.input, event.dimensions, event.encoding_format) == (["a", "b"], 3, "float")
    assert event.extra == {"user": "end-user-7"}


async def test_base64_answers_are_strings_that_decode_to_the_vectors(http, pipeline):
    r = await http.post(
        "/v1/embeddings",
        json={"model": "demo-embed", "input": ["a", "b"], "encoding_format": "base64"},
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert all(isinstance(d["embedding"], str) for d in body["data"])
    assert pipeline.requests[0].encoding_format == "base64"
    decoded = {**body, "data": [{**d, "embedding": from_base64(d["embedding"])} for d in body["data"]]}
    check("CreateEmbeddingResponse", decoded)  # the spec describes the floats a client decodes
    assert [d["embedding"] for d in decoded["data"]] == VECTORS


async def test_a_bad_body_is_a_400_naming_the_field(http, pipeline):
    r = await http.post("/v1/embeddings", json={"model": "demo-embed", "input": [[1, 2, 3]]}, headers=AUTH)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "input" and err["code"] == "validation_error" and "token arrays" in err["message"]
    assert pipeline.requests == []


async def test_gateway_errors_keep_their_status(http, pipeline):
    pipeline.answer = lambda req: CapabilityNotSupported("model 'demo-openai' does not support embeddings")
    r = await http.post("/v1/embeddings", json={"model": "demo-openai", "input": "x"}, headers=AUTH)
    assert r.status_code == 400
    assert r.json()["error"] == {
        "message": "model 'demo-openai' does not support embeddings",
        "type": "invalid_request_error",
        "param": None,
        "code": "capability_not_supported",
    }


async def test_no_key_no_embeddings(http, pipeline):
    r = await http.post("/v1/embeddings", json={"model": "demo-embed", "input": "x"})
    assert r.status_code == 401 and pipeline.requests == []

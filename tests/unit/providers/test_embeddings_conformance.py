"""One suite for every adapter offering ``embed`` (STYLE 19): the same normalised expectations,
each provider's recorded samples from ``fixtures/<kind>_embeddings.py``. Tests taking
``upstream`` run over the executor's own transport (aiohttp) against a real local server."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from types import ModuleType

import httpx
import orjson
import pytest

from services.contracts.errors import CapabilityNotSupported, ProviderError, ProviderTimeout
from services.contracts.events import EmbedRequested
from services.executor.providers._embeddings import from_base64, to_base64
from services.executor.providers.base import EmbeddingsAdapter
from services.executor.providers.registry import adapter_for, adapters
from services.executor.targets import Target

from .fixtures.embeddings import EMBED_FIXTURES
from .support import answer, deployment, raising
from .upstreams import Upstream

ADAPTERS = adapters("embed")
KINDS = sorted(ADAPTERS)
KEY = "sk-test-123"
TEXTS = ["The quick brown fox", "jumped over the lazy dog"]


def embed(*texts: str, **fields) -> EmbedRequested:
    return EmbedRequested(
        request_id="req-1", tenant_id="t1", model="alias", input=list(texts or TEXTS), **fields
    )


def float32(values: list[float]) -> list[float]:
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


@dataclass
class Case:
    adapter: EmbeddingsAdapter
    fx: ModuleType
    deployment: Target
    url: str


def case_for(kind: str, upstream: Upstream | None = None) -> Case:
    fx = EMBED_FIXTURES[kind]
    base_url = upstream.base_url(fx.BASE_URL) if upstream else fx.BASE_URL
    assert fx.URL.startswith(fx.BASE_URL)
    return Case(
        ADAPTERS[kind],
        fx,
        deployment(kind, base_url, fx.UPSTREAM_MODEL, provider=f"{kind}-east"),
        base_url + fx.URL[len(fx.BASE_URL) :],
    )


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def case(kind: str, upstream: Upstream) -> Case:
    return case_for(kind, upstream)


@pytest.fixture
def mapping(kind: str) -> Case:
    return case_for(kind)


def test_registry_and_fixtures_cover_the_same_kinds() -> None:
    assert set(EMBED_FIXTURES) == set(ADAPTERS) == {"openai", "ollama"}
    for kind, adapter in ADAPTERS.items():
        assert adapter.kind == kind
        assert adapter_for(kind, "embed") is adapter


def test_a_kind_without_embeddings_is_capability_not_supported() -> None:
    with pytest.raises(CapabilityNotSupported, match="'anthropic' does not offer operation 'embed'"):
        adapter_for("anthropic", "embed")


async def test_embed_floats(case: Case, upstream: Upstream) -> None:
    http, rec = upstream.serve(answer(200, case.fx.FLOAT_ANSWER))
    done = await case.adapter.embed(http, embed(), case.deployment, KEY)

    assert done.vectors == case.fx.VECTORS
    assert done.usage.prompt_tokens == done.usage.total_tokens == case.fx.PROMPT_TOKENS
    assert done.usage.completion_tokens == 0
    assert done.usage.units == {"inputs": 2}
    assert done.model == case.fx.MODEL
    sent = rec.request
    assert sent.method == "POST" and str(sent.url) == case.url
    assert sent.headers["content-type"] == "application/json"
    for name, value in case.fx.auth_headers(KEY).items():
        assert sent.headers[name] == value
    assert rec.body["model"] == case.fx.UPSTREAM_MODEL
    assert rec.body["input"] == TEXTS
    assert "dimensions" not in rec.body
    if case.fx.ENCODING_FIELD:
        assert rec.body[case.fx.ENCODING_FIELD] == "float"


async def test_base64_is_what_the_caller_asked_and_round_trips(case: Case, upstream: Upstream) -> None:
    http, rec = upstream.serve(answer(200, case.fx.BASE64_ANSWER))
    done = await case.adapter.embed(http, embed(encoding_format="base64"), case.deployment, KEY)

    assert all(isinstance(v, str) for v in done.vectors)
    assert [from_base64(v) for v in done.vectors] == [float32(v) for v in case.fx.VECTORS]
    if case.fx.NATIVE_BASE64:  # the provider's own bytes reach the caller unchanged
        wire = [d["embedding"] for d in orjson.loads(case.fx.BASE64_ANSWER)["data"]]
        assert done.vectors == wire
        assert rec.body[case.fx.ENCODING_FIELD] == "base64"
    else:
        assert "encoding_format" not in rec.body


def test_dimensions_are_sent_when_set(mapping: Case) -> None:
    body = mapping.adapter.to_wire(embed(dimensions=256), mapping.deployment)
    assert body["dimensions"] == 256


def test_extra_reaches_the_wire_typed_fields_win(mapping: Case) -> None:
    req = embed(
        extra={"user": "end-user-7", "x_vendor": {"a": 1}, "model": "evil", "input": ["x"], "dimensions": 3}
    )
    body = mapping.adapter.to_wire(req, mapping.deployment)
    assert body["user"] == "end-user-7" and body["x_vendor"] == {"a": 1}
    assert body["model"] == mapping.fx.UPSTREAM_MODEL
    assert body["input"] == TEXTS
    assert "dimensions" not in body, "no dimensions asked: an extra one does not slip through"


def test_answer_with_fewer_vectors_than_inputs_is_refused(mapping: Case) -> None:
    with pytest.raises(ValueError, match="expected 3 vectors, got 2"):
        mapping.adapter.from_wire(orjson.loads(mapping.fx.FLOAT_ANSWER), embed("a", "b", "c"))


async def test_wrong_vector_count_over_http_is_a_provider_error(case: Case, upstream: Upstream) -> None:
    http, _ = upstream.serve(answer(200, case.fx.FLOAT_ANSWER))
    with pytest.raises(ProviderError, match="unexpected response shape"):
        await case.adapter.embed(http, embed("only one"), case.deployment, KEY)


@pytest.mark.parametrize(("kind", "status"), [(k, s) for k in KINDS for s in EMBED_FIXTURES[k].ERRORS])
async def test_error_status_maps_to_provider_error(kind: str, status: int, upstream: Upstream) -> None:
    c = case_for(kind, upstream)
    body, message = c.fx.ERRORS[status]
    http, _ = upstream.serve(answer(status, body))
    with pytest.raises(ProviderError) as err:
        await c.adapter.embed(http, embed(), c.deployment, KEY)
    assert type(err.value) is ProviderError
    assert err.value.details["upstream_status"] == status
    assert err.value.message.startswith(f"{kind}-east returned HTTP {status}: ")
    assert message in err.value.message
    assert err.value.retryable is (status != 400), "a 4xx verdict on the request is not retried"


@pytest.mark.parametrize("exc", [httpx.ReadTimeout, httpx.ConnectTimeout])
async def test_timeouts_map_to_provider_timeout(
    case: Case, exc: type[httpx.HTTPError], upstream: Upstream
) -> None:
    http, _ = upstream.serve(raising(exc))
    with pytest.raises(ProviderTimeout, match=f"{case.deployment.provider}: upstream timed out"):
        await case.adapter.embed(http, embed(), case.deployment, KEY)


async def test_connection_failure_maps_to_provider_error(case: Case, upstream: Upstream) -> None:
    http, _ = upstream.serve(raising(httpx.ConnectError, "connection refused"))
    with pytest.raises(ProviderError) as err:
        await case.adapter.embed(http, embed(), case.deployment, KEY)
    assert err.value.details == {"upstream_status": None}


async def test_non_json_success_body_is_a_provider_error(case: Case, upstream: Upstream) -> None:
    http, _ = upstream.serve(answer(200, b"<html>gateway hiccup</html>", "text/html"))
    with pytest.raises(ProviderError, match="not JSON"):
        await case.adapter.embed(http, embed(), case.deployment, KEY)


async def test_no_api_key_sends_no_credentials(case: Case, upstream: Upstream) -> None:
    http, rec = upstream.serve(answer(200, case.fx.FLOAT_ANSWER))
    await case.adapter.embed(http, embed(), case.deployment, None)
    assert "authorization" not in rec.request.headers


# --- conversions the adapters rely on ---------------------------------------------------------


def test_base64_is_little_endian_float32() -> None:
    assert to_base64([1.0, -2.5]) == "AACAPwAAIMA="
    assert from_base64("AACAPwAAIMA=") == [1.0, -2.5]


def test_ollama_vectors_longer_than_dimensions_are_cut_and_renormalised() -> None:
    """An Ollama too old for ``dimensions`` answers full-length vectors."""
    c = case_for("ollama")
    body = {"model": "m", "embeddings": [[3.0, 4.0, 12.0], [1.0, 0.0]], "prompt_eval_count": 2}
    done = c.adapter.from_wire(body, embed("a", "b", dimensions=2))
    assert done.vectors == [[0.6, 0.8], [1.0, 0.0]]


def test_openai_floats_answered_to_a_base64_request_are_converted() -> None:
    """A compatible server that ignores ``encoding_format`` still gives the caller base64."""
    c = case_for("openai")
    done = c.adapter.from_wire(orjson.loads(c.fx.FLOAT_ANSWER), embed(encoding_format="base64"))
    assert done.vectors == [to_base64(v) for v in c.fx.VECTORS]

"""One suite, every registered adapter (STYLE 19): the same normalised expectations, with
each provider's recorded wire samples supplied by ``fixtures/<kind>.py``. Tests that take
``upstream`` run over the executor's own transport (``AiohttpTransport``) against a real local
server."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import httpx
import pytest

from services.contracts.errors import CapabilityNotSupported, ProviderError, ProviderTimeout
from services.executor.providers.base import ChatAdapter
from services.executor.providers.registry import adapter_for, adapters
from services.executor.targets import Target

from .fixtures import FIXTURES, TEXT
from .support import LONG_LINE, answer, chat, collect, deployment, feed_all, joined, raising, streamed
from .upstreams import Upstream

ADAPTERS = adapters("chat")
KINDS = sorted(ADAPTERS)
KEY = "sk-test-123"


@dataclass
class Case:
    adapter: ChatAdapter
    fx: ModuleType
    deployment: Target
    url: str  # where the adapter must send requests
    stream_url: str  # ... and streamed ones


def case_for(kind: str, upstream: Upstream | None = None) -> Case:
    fx = FIXTURES[kind]
    base_url = upstream.base_url(fx.BASE_URL) if upstream else fx.BASE_URL
    assert fx.URL.startswith(fx.BASE_URL) and fx.STREAM_URL.startswith(fx.BASE_URL)
    return Case(
        ADAPTERS[kind],
        fx,
        deployment(kind, base_url, fx.UPSTREAM_MODEL, provider=f"{kind}-east"),
        base_url + fx.URL[len(fx.BASE_URL) :],
        base_url + fx.STREAM_URL[len(fx.BASE_URL) :],
    )


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def case(kind: str, upstream: Upstream) -> Case:
    """A kind's adapter and samples, its deployment pointing at ``upstream``."""
    return case_for(kind, upstream)


@pytest.fixture
def mapping(kind: str) -> Case:
    """A kind's adapter and samples, for tests of the pure mapping (no HTTP)."""
    return case_for(kind)


def test_registry_and_fixtures_cover_the_same_kinds() -> None:
    assert set(FIXTURES) == set(ADAPTERS), "every registered adapter needs conformance fixtures"
    for kind, adapter in ADAPTERS.items():
        assert adapter.kind == kind
        assert adapter_for(kind, "chat") is adapter


def test_unknown_kind_is_a_lookup_error() -> None:
    with pytest.raises(LookupError, match="nope"):
        adapter_for("nope", "chat")


def test_an_operation_a_kind_lacks_is_capability_not_supported() -> None:
    with pytest.raises(CapabilityNotSupported, match="'anthropic' does not offer operation 'video.generate'"):
        adapter_for("anthropic", "video.generate")


async def test_complete_text(case: Case, upstream: Upstream) -> None:
    http, rec = upstream.serve(answer(200, case.fx.TEXT_COMPLETION))
    done = await case.adapter.complete(http, chat(), case.deployment, KEY)

    assert done.message.content == TEXT
    assert done.message.tool_calls is None
    assert done.finish_reason == "stop"
    assert done.usage == case.fx.USAGE
    assert done.model == case.fx.MODEL
    sent = rec.request
    assert sent.method == "POST"
    assert str(sent.url) == case.url
    assert sent.headers["content-type"] == "application/json"
    for name, value in case.fx.auth_headers(KEY).items():
        assert sent.headers[name] == value
    assert case.fx.sent_model(case.url, rec.body) == case.fx.UPSTREAM_MODEL
    assert case.fx.sent_stream(case.url, rec.body) is False


async def test_stream_text(case: Case, upstream: Upstream) -> None:
    http, rec = upstream.serve(streamed(case.fx.TEXT_STREAM, case.fx.STREAM_CONTENT_TYPE))
    deltas = await collect(case.adapter.stream(http, chat(), case.deployment, KEY))

    assert joined(deltas) == TEXT
    final = deltas[-1]
    assert final.finish_reason == "stop"
    assert final.usage == case.fx.USAGE
    assert [d for d in deltas if d.finish_reason] == [final], "only the last delta finishes"
    assert str(rec.request.url) == case.stream_url
    assert case.fx.sent_stream(case.stream_url, rec.body) is True


async def test_stream_survives_arbitrary_network_chunking(case: Case, upstream: Upstream) -> None:
    http, _ = upstream.serve(streamed(case.fx.TEXT_STREAM, case.fx.STREAM_CONTENT_TYPE, piece=7))
    deltas = await collect(case.adapter.stream(http, chat(), case.deployment, KEY))
    assert joined(deltas) == TEXT
    assert deltas[-1].usage == case.fx.USAGE


def test_parser_alone_matches_the_recording(mapping: Case) -> None:
    deltas = feed_all(mapping.adapter.stream_parser(), mapping.fx.TEXT_STREAM)
    assert joined(deltas) == TEXT
    assert deltas[-1].finish_reason == "stop"


def test_truncated_stream_is_a_provider_error(mapping: Case) -> None:
    lines = mapping.fx.TEXT_STREAM.decode().splitlines()
    parser = mapping.adapter.stream_parser()
    for line in lines[: len(lines) // 2]:
        parser.feed(line)
    with pytest.raises(ProviderError):
        parser.close()


@pytest.mark.parametrize(("kind", "status"), [(k, s) for k in KINDS for s in FIXTURES[k].ERRORS])
async def test_error_status_maps_to_provider_error(kind: str, status: int, upstream: Upstream) -> None:
    c = case_for(kind, upstream)
    body, message = c.fx.ERRORS[status]
    http, _ = upstream.serve(answer(status, body))

    with pytest.raises(ProviderError) as whole:
        await c.adapter.complete(http, chat(), c.deployment, KEY)
    with pytest.raises(ProviderError) as streamed_err:
        await collect(c.adapter.stream(http, chat(), c.deployment, KEY))

    for err in (whole.value, streamed_err.value):
        assert type(err) is ProviderError
        assert err.details["upstream_status"] == status
        assert err.message.startswith(f"{kind}-east returned HTTP {status}: ")
        assert message in err.message


@pytest.mark.parametrize("exc", [httpx.ReadTimeout, httpx.ConnectTimeout, httpx.PoolTimeout])
async def test_timeouts_map_to_provider_timeout(
    case: Case, exc: type[httpx.HTTPError], upstream: Upstream
) -> None:
    http, _ = upstream.serve(raising(exc))
    with pytest.raises(ProviderTimeout, match=f"{case.deployment.provider}: upstream timed out"):
        await case.adapter.complete(http, chat(), case.deployment, KEY)
    with pytest.raises(ProviderTimeout):
        await collect(case.adapter.stream(http, chat(), case.deployment, KEY))


async def test_timeout_mid_stream_maps_to_provider_timeout(case: Case, upstream: Upstream) -> None:
    half = case.fx.TEXT_STREAM[: len(case.fx.TEXT_STREAM) // 2]
    http, _ = upstream.serve(streamed(half, case.fx.STREAM_CONTENT_TYPE, then=httpx.ReadTimeout("stalled")))
    seen = []
    with pytest.raises(ProviderTimeout):
        async for delta in case.adapter.stream(http, chat(), case.deployment, KEY):
            seen.append(delta)
    assert joined(seen), "deltas before the stall were delivered"


async def test_connection_failure_maps_to_provider_error(case: Case, upstream: Upstream) -> None:
    http, _ = upstream.serve(raising(httpx.ConnectError, "connection refused"))
    with pytest.raises(ProviderError) as err:
        await case.adapter.complete(http, chat(), case.deployment, KEY)
    assert type(err.value) is ProviderError
    assert err.value.details == {"upstream_status": None}


async def test_connection_dropped_mid_stream_maps_to_provider_error(case: Case, upstream: Upstream) -> None:
    half = case.fx.TEXT_STREAM[: len(case.fx.TEXT_STREAM) // 2]
    http, _ = upstream.serve(
        streamed(half, case.fx.STREAM_CONTENT_TYPE, then=httpx.RemoteProtocolError("peer closed connection"))
    )
    seen = []
    with pytest.raises(ProviderError) as err:
        async for delta in case.adapter.stream(http, chat(), case.deployment, KEY):
            seen.append(delta)
    assert type(err.value) is ProviderError
    assert err.value.details == {"upstream_status": None}
    assert err.value.message.startswith(f"{case.deployment.provider}: upstream connection failed")
    assert joined(seen), "deltas before the drop were delivered"


async def test_stream_line_of_a_megabyte(case: Case, upstream: Upstream) -> None:
    long_word = "Hello" + "x" * LONG_LINE
    body = case.fx.TEXT_STREAM.replace(b'"Hello"', f'"{long_word}"'.encode(), 1)
    assert len(body) > len(case.fx.TEXT_STREAM), "the recording carries the first word as a JSON string"
    http, _ = upstream.serve(streamed(body, case.fx.STREAM_CONTENT_TYPE, piece=4096))
    deltas = await collect(case.adapter.stream(http, chat(), case.deployment, KEY))
    assert joined(deltas) == TEXT.replace("Hello", long_word, 1)
    assert deltas[-1].usage == case.fx.USAGE


async def test_stream_ending_early_over_http_is_a_provider_error(case: Case, upstream: Upstream) -> None:
    half = case.fx.TEXT_STREAM[: len(case.fx.TEXT_STREAM) // 2]
    http, _ = upstream.serve(streamed(half, case.fx.STREAM_CONTENT_TYPE))
    with pytest.raises(ProviderError, match=case.deployment.provider):
        await collect(case.adapter.stream(http, chat(), case.deployment, KEY))


async def test_non_json_success_body_is_a_provider_error(case: Case, upstream: Upstream) -> None:
    http, _ = upstream.serve(answer(200, b"<html>gateway hiccup</html>", "text/html"))
    with pytest.raises(ProviderError, match="not JSON"):
        await case.adapter.complete(http, chat(), case.deployment, KEY)


async def test_no_api_key_sends_no_credentials(case: Case, upstream: Upstream) -> None:
    http, rec = upstream.serve(answer(200, case.fx.TEXT_COMPLETION))
    await case.adapter.complete(http, chat(), case.deployment, None)
    assert "authorization" not in rec.request.headers
    assert "x-api-key" not in rec.request.headers
    assert "x-goog-api-key" not in rec.request.headers


def test_extra_params_reach_the_wire(mapping: Case) -> None:
    body = mapping.adapter.to_wire(chat(extra={"x_vendor_flag": {"a": 1}}), mapping.deployment, stream=False)
    assert body["x_vendor_flag"] == {"a": 1}
    assert mapping.fx.sent_model(mapping.url, body) == mapping.fx.UPSTREAM_MODEL

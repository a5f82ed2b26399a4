"""Factory fixtures for the provider tests.

``mock_http(handler) -> (http, recorder)``: an ``HttpxTransport`` over a recording
``httpx.MockTransport``, for tests of what an adapter sends. ``upstream`` runs a test
once per transport: over that mock, and over a real local server reached through
``AiohttpTransport`` and through ``H1Transport`` (see ``upstreams``); ``live_upstream``
is that server alone, once per real transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from services.executor.providers.transport import HttpTransport

from .support import Handler, Recorder
from .upstreams import LiveUpstream, MockUpstream, Upstream


@pytest.fixture
async def mock_http() -> AsyncIterator[Callable[[Handler], tuple[HttpTransport, Recorder]]]:
    upstream = MockUpstream()
    yield upstream.serve
    await upstream.aclose()


@pytest.fixture(params=["httpx-mock", "aiohttp-live", "h1-live"])
async def upstream(request: pytest.FixtureRequest) -> AsyncIterator[Upstream]:
    if request.param == "httpx-mock":
        mock = MockUpstream()
        yield mock
        await mock.aclose()
    else:
        live = LiveUpstream(transport=request.param.removesuffix("-live"))
        await live.start()
        yield live
        await live.aclose()


@pytest.fixture(params=["aiohttp", "h1"])
async def live_upstream(request: pytest.FixtureRequest) -> AsyncIterator[LiveUpstream]:
    live = LiveUpstream(transport=request.param)
    await live.start()
    yield live
    await live.aclose()

"""Factory fixtures for the provider tests, all over real HTTP through ``AiohttpTransport``
(see ``upstreams``).

``upstream`` / ``live_upstream``: a ``LiveUpstream`` (a local server that answers with the
test's handler). ``mock_http(handler) -> (http, recorder)``: the same server reached whatever
URL a deployment names (``Rerouted``), for tests of what an adapter sends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from services.executor.providers.transport import HttpTransport

from .support import Handler, Recorder
from .upstreams import LiveUpstream


@pytest.fixture
async def upstream() -> AsyncIterator[LiveUpstream]:
    live = LiveUpstream()
    await live.start()
    yield live
    await live.aclose()


@pytest.fixture
async def live_upstream(upstream: LiveUpstream) -> LiveUpstream:
    return upstream


@pytest.fixture
async def mock_http(upstream: LiveUpstream) -> Callable[[Handler], tuple[HttpTransport, Recorder]]:
    return lambda respond: upstream.serve(respond, reroute=True)

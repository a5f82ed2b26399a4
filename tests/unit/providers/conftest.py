"""The ``mock_client`` factory fixture: httpx clients over a recording MockTransport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from .support import Handler, Recorder


@pytest.fixture
async def mock_client() -> AsyncIterator[Callable[[Handler], tuple[httpx.AsyncClient, Recorder]]]:
    """``mock_client(handler) -> (client, recorder)``; clients are closed after the test."""
    clients: list[httpx.AsyncClient] = []

    def make(respond: Handler) -> tuple[httpx.AsyncClient, Recorder]:
        recorder = Recorder(respond)
        client = httpx.AsyncClient(transport=httpx.MockTransport(recorder))
        clients.append(client)
        return client, recorder

    yield make
    for client in clients:
        await client.aclose()

"""The executor's provider client: aiohttp, built from ``ExecutorSettings``."""

from __future__ import annotations

import pytest

from services.executor.app import _transport
from services.executor.providers.transport import AiohttpTransport
from services.executor.settings import ExecutorSettings


def test_provider_calls_go_through_one_bounded_aiohttp_pool() -> None:
    default = _transport(ExecutorSettings.from_env(env={}))
    assert type(default) is AiohttpTransport
    assert default._trust_env is False and default.max_connections == 512
    tuned = _transport(
        ExecutorSettings.from_env(
            env={"LLMGW_PROVIDER_TRUST_ENV": "1", "LLMGW_PROVIDER_MAX_CONNECTIONS": "64"}
        )
    )
    assert type(tuned) is AiohttpTransport
    assert tuned._trust_env is True and tuned.max_connections == 64


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_pool_bound_that_is_not_a_positive_number_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="LLMGW_PROVIDER_MAX_CONNECTIONS must be"):
        ExecutorSettings.from_env(env={"LLMGW_PROVIDER_MAX_CONNECTIONS": value})

"""Which HTTP client the executor calls providers through."""

from __future__ import annotations

import dataclasses

from services.executor.app import _transport
from services.executor.providers.h1 import H1Transport
from services.executor.providers.transport import AiohttpTransport
from services.runtime.settings import Settings


def test_provider_calls_go_through_h1_unless_proxies_must_be_honoured() -> None:
    settings = Settings.from_env({})
    assert type(_transport(settings)) is H1Transport
    proxied = _transport(dataclasses.replace(settings, provider_trust_env=True))
    assert type(proxied) is AiohttpTransport and proxied._trust_env is True
    assert type(_transport(Settings.from_env({"LLMGW_PROVIDER_TRUST_ENV": "1"}))) is AiohttpTransport

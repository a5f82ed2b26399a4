"""A routing configuration of its own (the demo file changes with other features) and
builders of the records the router's statistics read."""

from __future__ import annotations

import pytest
import yaml

from services.contracts.events import AuditRecorded, ChatRequested, UsageRecorded
from services.runtime.codec import encode
from services.runtime.config import GatewayConfig

ROUTING = """
providers:
  p1: {kind: openai, base_url: "http://p1.invalid/v1"}
  p2: {kind: anthropic, base_url: "http://p2.invalid"}
models:
  weighted:
    deployments:
      - {provider: p1, model: m-a, weight: 1}
      - {provider: p1, model: m-b, weight: 1000}
      - {provider: p2, model: m-c, weight: 1}
  cheap:
    routing: cheapest
    deployments:
      - {provider: p1, model: pricey, price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}
      - {provider: p2, model: small, price: {input_per_mtok: 0.1, output_per_mtok: 0.2}}
      - {provider: p1, model: mid, price: {input_per_mtok: 0.5, output_per_mtok: 0.5}}
      - {provider: p2, model: mid-too, price: {input_per_mtok: 0.9, output_per_mtok: 0.1}}
  fast:
    routing: fastest
    deployments:
      - {provider: p1, model: slow}
      - {provider: p1, model: quick}
      - {provider: p2, model: new}
  mixed:
    capabilities: [chat, stream]
    deployments:
      - {provider: p1, model: plain}
      - {provider: p2, model: tooled, capabilities: [chat, stream, tools]}
  split:
    capabilities: [chat]
    deployments:
      - {provider: p1, model: t, capabilities: [chat, tools]}
      - {provider: p2, model: v, capabilities: [chat, vision]}
  notools:
    capabilities: [chat, stream]
    deployments: [{provider: p1, model: nt}]
  notools-2:
    capabilities: [chat, stream]
    deployments: [{provider: p2, model: nt2}]
  with-tools:
    capabilities: [chat, stream, tools]
    deployments: [{provider: p2, model: wt}]
  embedder:
    capabilities: [embeddings]
    deployments: [{provider: p1, model: e}]
tenants:
  t: {}
  narrow: {allowed_models: [notools, embedder]}
"""

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="session")
def routing_config() -> GatewayConfig:
    return GatewayConfig.model_validate(yaml.safe_load(ROUTING))


def chat(model: str, **kw) -> ChatRequested:
    base = {
        "request_id": "r1",
        "tenant_id": "t",
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
    }
    return ChatRequested.model_validate(base | kw)


def usage(
    alias: str,
    provider: str,
    model: str,
    *,
    status: str = "ok",
    streamed: bool = True,
    ttft_ms: float | None = 100.0,
    total_ms: float | None = None,
    error_code: str | None = None,
) -> bytes:
    return encode(
        UsageRecorded(
            request_id="u",
            tenant_id="t",
            status=status,
            alias=alias,
            provider=provider,
            model=model,
            streamed=streamed,
            ttft_ms=ttft_ms,
            total_ms=total_ms,
            error_code=error_code,
        )
    )


def audit(
    alias: str,
    provider: str,
    model: str,
    action: str = "fallback_triggered",
    error_code: str | None = "provider_error",
) -> bytes:
    return encode(
        AuditRecorded(
            request_id="a",
            tenant_id="t",
            action=action,
            actor="executor",
            alias=alias,
            provider=provider,
            model=model,
            error_code=error_code,
        )
    )

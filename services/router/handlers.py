"""Routing decisions: pure functions of a request and the configuration.

``plan`` either returns the execution plan or raises the ``GatewayError`` that
names what was wrong; it does no I/O, so every rejection is tested without a broker.
"""

from __future__ import annotations

import random

import orjson

from services.contracts.errors import (
    CapabilityNotSupported,
    ModelNotApproved,
    ModelNotFound,
    ValidationError,
)
from services.contracts.events import ChatRequested, Deployment, EmbedRequested, ExecutionPlanned, RequestBase
from services.runtime.config import GatewayConfig, ModelConfig

Executable = ChatRequested | EmbedRequested


def admit(req: RequestBase, config: GatewayConfig) -> None:
    """Checks every operation passes: a configured tenant, the client id policy."""
    if req.tenant_id not in config.tenants:
        raise ModelNotApproved(f"tenant {req.tenant_id!r} is not configured, so it may use no model")
    if config.policies.require_client_id and not req.client_id:
        raise ValidationError("client_id is required by policy", param="client_id")


def plan(
    req: Executable, config: GatewayConfig, *, raw_size: int | None = None, rng: random.Random | None = None
) -> ExecutionPlanned:
    """``raw_size`` (bytes of the event) lets the prompt-size check skip small requests."""
    admit(req, config)
    if req.stream and req.operation != "chat":
        raise ValidationError(f"operation {req.operation!r} does not stream", param="stream")
    if raw_size is None or raw_size > config.policies.max_prompt_bytes:
        _check_prompt_size(req, config.policies.max_prompt_bytes)

    deployments: list[Deployment] = []
    for alias in [req.model, *req.fallbacks]:
        model = _resolve(alias, req, config)
        if isinstance(req, ChatRequested):
            _check_capabilities(alias, model, req)
        else:
            _check_embed(alias, model, req)
        deployments += _ordered(alias, model, config, rng or random)

    d = config.defaults
    return ExecutionPlanned(
        request_id=req.request_id,
        tenant_id=req.tenant_id,
        user_id=req.user_id,
        request=req,
        deployments=deployments,
        retries=d.retries,
        chunk_window_ms=d.chunk_window_ms,
        ttft_ms=req.timeouts.ttft_ms or d.ttft_ms,
        total_ms=req.timeouts.total_ms or d.total_ms,
    )


def _resolve(alias: str, req: Executable, config: GatewayConfig) -> ModelConfig:
    model = config.models.get(alias)
    if model is None:
        tenant = config.tenants[req.tenant_id]
        usable = sorted(a for a in config.models if tenant.allows(a) and a not in config.policies.disabled_models)
        raise ModelNotFound(f"model {alias!r} does not exist; available: {', '.join(usable) or 'none'}", param="model")
    if alias in config.policies.disabled_models:
        raise ModelNotApproved(f"model {alias!r} is disabled by policy", param="model")
    if not config.tenants[req.tenant_id].allows(alias):
        raise ModelNotApproved(f"tenant {req.tenant_id!r} is not approved for model {alias!r}", param="model")
    return model


def _check_capabilities(alias: str, model: ModelConfig, req: ChatRequested) -> None:
    caps = set(model.capabilities)

    def need(cap: str, what: str) -> None:
        if cap not in caps:
            raise CapabilityNotSupported(f"model {alias!r} does not support {what} (capability {cap!r})")

    need("chat", "chat")
    if req.stream:
        need("stream", "streaming")
    if req.params.tools:
        need("tools", "tools")
    rf = req.params.response_format or {}
    if rf.get("type") == "json_schema":
        need("json_schema", "structured output (response_format json_schema)")
    for m in req.messages:
        if isinstance(m.content, list):
            for part in m.content:
                kind = part.get("type")
                if kind in ("image_url", "image"):
                    need("vision", "image input")
                elif kind in ("input_audio",):
                    need("audio_in", "audio input")
                elif kind in ("file", "document"):
                    need("documents", "document input")
    for field in ("max_tokens", "max_completion_tokens"):
        mt = req.params.max_tokens if field == "max_tokens" else req.params.extra.get(field)
        if isinstance(mt, int) and mt > model.max_output_tokens:
            raise ValidationError(
                f"{field}={mt} exceeds model {alias!r} output limit of {model.max_output_tokens}", param=field
            )


def _check_embed(alias: str, model: ModelConfig, req: EmbedRequested) -> None:
    if "embeddings" not in model.capabilities:
        raise CapabilityNotSupported(f"model {alias!r} does not support embeddings (capability 'embeddings')")


def _check_prompt_size(req: Executable, limit: int) -> None:
    if isinstance(req, ChatRequested):
        what, size = "messages", len(orjson.dumps([m.model_dump(exclude_none=True) for m in req.messages]))
    else:
        what, size = "input", sum(len(t.encode()) for t in req.input)
    if size > limit:
        raise ValidationError(f"{what} is {size} bytes, over the {limit}-byte prompt limit", param=what)


def _ordered(alias: str, model: ModelConfig, config: GatewayConfig, rng: random.Random) -> list[Deployment]:
    """The alias's deployments, the first drawn by weight, the rest as fallbacks in order."""
    deps = list(model.deployments)
    if len(deps) > 1:
        first = rng.choices(range(len(deps)), weights=[d.weight for d in deps])[0]
        deps.insert(0, deps.pop(first))
    return [Deployment(alias=alias, provider=d.provider, upstream_model=d.model) for d in deps]

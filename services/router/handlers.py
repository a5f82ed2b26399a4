"""Routing decisions: pure functions of a request, the configuration, the model catalog
(the Model Registry's) and the router's deployment statistics.

``plan`` either returns the execution plan or raises the ``GatewayError`` that
names what was wrong; it does no I/O, so every rejection is tested without a broker.

``admit`` runs first: a configured tenant, then the configuration's ``policies`` as the built-in
policy hooks (``services/runtime/hooks/policies.py``: client id, prompt size, disabled models),
whose blocks keep their historical errors. The router runs it, then the tenant's own pre-call
hooks, then ``plan(..., admitted=True)``; a direct ``plan`` call admits the request itself.

Every alias of the request (the model, then its ``fallbacks`` in order) contributes the
deployments that have every capability the request needs, in its routing's order
(``routing.py``); an alias with none is skipped. Only when no alias has one is the request
refused, with ``capability_not_supported`` naming the requested model and what it lacks.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from services.contracts.errors import (
    CapabilityNotSupported,
    ModelNotApproved,
    ModelNotFound,
    ValidationError,
)
from services.contracts.events import (
    BatchRunRequested,
    ChatRequested,
    Deployment,
    EmbedRequested,
    ExecutionPlanned,
    ImageGenerateRequested,
    RealtimeTurnRequested,
    RequestBase,
    SpeechRequested,
    TranscribeRequested,
    VideoGenerateRequested,
)
from services.runtime.catalog import capabilities
from services.runtime.config import GatewayConfig, ModelConfig, Policies
from services.runtime.hooks import Block, block_error
from services.runtime.hooks.policies import (
    DisabledModelsHook,
    PolicyHook,
    PromptSizeHook,
    RequiredClientIdHook,
)

from .routing import capable, order
from .stats import RoutingStats
from .tools import with_tools

Executable = (
    ChatRequested
    | EmbedRequested
    | ImageGenerateRequested
    | SpeechRequested
    | TranscribeRequested
    | VideoGenerateRequested
    | RealtimeTurnRequested
    | BatchRunRequested
)
#: Operations that may stream (``stream: true``).
STREAMING = frozenset({"chat", "audio.speech"})
#: The provider kinds whose batch API takes a batch of each endpoint (``batch.run``).
BATCH_KINDS: dict[str, frozenset[str]] = {
    "/v1/chat/completions": frozenset({"openai", "anthropic"}),
    "/v1/messages": frozenset({"openai", "anthropic"}),
    "/v1/embeddings": frozenset({"openai"}),
}
#: A ``batch.run``'s deadline beyond its completion window: the provider's finalizing, the
#: results' download and the items' records.
BATCH_GRACE_S = 3600.0


def admit(req: RequestBase, config: GatewayConfig, *, raw_size: int | None = None) -> None:
    """Checks every operation passes: a configured tenant, then the policies (their hooks' errors).
    ``raw_size`` (bytes of the event) lets the prompt-size check skip small requests."""
    if req.tenant_id not in config.tenants:
        raise ModelNotApproved(f"tenant {req.tenant_id!r} is not configured, so it may use no model")
    for hook in policy_hooks(config.policies):
        verdict = hook.check(req, raw_size)
        if isinstance(verdict, Block):
            raise block_error(verdict, "request")


_policy_hooks: dict[int, tuple[Policies, tuple[PolicyHook, ...]]] = {}


def policy_hooks(policies: Policies) -> tuple[PolicyHook, ...]:
    """The policy hooks the ``policies`` section stands for, in the order they are checked
    (built once per ``Policies`` object)."""
    cached = _policy_hooks.get(id(policies))
    if cached is not None and cached[0] is policies:
        return cached[1]
    hooks: list[PolicyHook] = []
    if policies.require_client_id:
        hooks.append(RequiredClientIdHook())
    hooks.append(PromptSizeHook(policies.max_prompt_bytes))
    if policies.disabled_models:
        hooks.append(DisabledModelsHook(policies.disabled_models))
    _policy_hooks[id(policies)] = (policies, tuple(hooks))
    return tuple(hooks)


def plan(
    req: Executable,
    config: GatewayConfig,
    *,
    raw_size: int | None = None,
    rng: random.Random | None = None,
    tool_schemas: Mapping[str, dict[str, Any]] | None = None,
    catalog: Mapping[str, ModelConfig] | None = None,
    stats: RoutingStats | None = None,
    admitted: bool = False,
) -> ExecutionPlanned:
    """``raw_size`` (bytes of the event) lets the prompt-size check skip small requests.
    ``tool_schemas``: the Type Registry's schemas of the request's ``gts_ref`` tools
    (``tools.registry_schemas``); the plan carries the tools in the unified function format.
    ``catalog``: the models (default: the file's); ``stats``: what orders ``fastest`` aliases
    and puts unusable deployments last (none: every deployment usable and unmeasured).
    ``admitted``: ``admit`` already ran for this request (the router runs it before the hooks)."""
    if not admitted:
        admit(req, config, raw_size=raw_size)
    if req.stream and req.operation not in STREAMING:
        raise ValidationError(f"operation {req.operation!r} does not stream", param="stream")

    models = config.models if catalog is None else catalog
    if isinstance(req, BatchRunRequested):
        return _batch_plan(req, config, models, stats, rng)
    needed = needed_capabilities(req)
    deployments: list[Deployment] = []
    for alias in [req.model, *req.fallbacks]:
        model = _resolve(alias, req, config, models)
        if isinstance(req, ChatRequested):
            _check_output_limit(alias, model, req)
        deployments += _ordered(alias, model, needed, req.stream, stats, rng)
    if not deployments:
        raise _unsupported(req.model, models[req.model], needed)

    if isinstance(req, ChatRequested) and req.params.tools:
        req = with_tools(req, tool_schemas or {})
    req = without_gateway_media(req)

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


def _batch_plan(
    req: BatchRunRequested,
    config: GatewayConfig,
    models: Mapping[str, ModelConfig],
    stats: RoutingStats | None,
    rng: random.Random | None,
) -> ExecutionPlanned:
    """A provider batch's plan: the alias's deployments whose provider has a batch API of a kind
    that takes the endpoint's lines (no fallbacks: the batch was admitted for this alias), under
    a deadline of the batch's completion window and ``BATCH_GRACE_S`` (not ``total_ms``)."""
    kinds = BATCH_KINDS.get(req.endpoint)
    if kinds is None:
        raise ValidationError(
            f"batch endpoint {req.endpoint!r} is not one of {', '.join(BATCH_KINDS)}", param="endpoint"
        )
    model = _resolve(req.model, req, config, models)
    needed = needed_capabilities(req)
    deps = [
        d
        for d in capable(model, needed)
        if (p := config.providers.get(d.provider)) is not None and p.batch_api and p.kind in kinds
    ]
    if not deps:
        raise CapabilityNotSupported(
            f"model {req.model!r} has no deployment whose provider has a batch API for {req.endpoint}"
        )
    deployments = [
        Deployment(alias=req.model, provider=d.provider, upstream_model=d.model)
        for d in order(req.model, model, deps, stats, streamed=False, rng=rng)
    ]
    d = config.defaults
    return ExecutionPlanned(
        request_id=req.request_id,
        tenant_id=req.tenant_id,
        user_id=req.user_id,
        request=req,
        deployments=deployments,
        retries=d.retries,
        chunk_window_ms=d.chunk_window_ms,
        ttft_ms=d.ttft_ms,
        total_ms=int((config.batches.completion_window_s + BATCH_GRACE_S) * 1000),
    )


def _resolve(
    alias: str, req: Executable, config: GatewayConfig, models: Mapping[str, ModelConfig]
) -> ModelConfig:
    model = models.get(alias)
    if model is None:
        tenant = config.tenants[req.tenant_id]
        usable = sorted(a for a in models if tenant.allows(a) and a not in config.policies.disabled_models)
        raise ModelNotFound(
            f"model {alias!r} does not exist; available: {', '.join(usable) or 'none'}", param="model"
        )
    if not config.tenants[req.tenant_id].allows(alias):
        raise ModelNotApproved(f"tenant {req.tenant_id!r} is not approved for model {alias!r}", param="model")
    return model


def needed_capabilities(req: Executable) -> dict[str, str]:
    """The capabilities serving ``req`` takes, each with what needs it (for error messages),
    in the order they are checked."""
    if isinstance(req, EmbedRequested):
        return {"embeddings": "embeddings"}
    if isinstance(req, ImageGenerateRequested):
        return {"image_generation": "image generation"}
    if isinstance(req, SpeechRequested):
        return {"speech": "text-to-speech"}
    if isinstance(req, TranscribeRequested):
        return {"transcription": "speech-to-text"}
    if isinstance(req, VideoGenerateRequested):
        return {"video_generation": "video generation"}
    if isinstance(req, RealtimeTurnRequested):
        return {"realtime": "realtime sessions"}
    if isinstance(req, BatchRunRequested):  # its lines' capability (their own are the provider's)
        return {"embeddings": "embeddings"} if req.endpoint == "/v1/embeddings" else {"chat": "chat"}
    need = {"chat": "chat"}
    if req.stream:
        need["stream"] = "streaming"
    if req.params.tools:
        need["tools"] = "tools"
    rf = req.params.response_format or {}
    if rf.get("type") == "json_schema":
        need["json_schema"] = "structured output (response_format json_schema)"
    for m in req.messages:
        if isinstance(m.content, list):
            for part in m.content:
                kind = part.get("type")
                if kind in ("image_url", "image"):
                    need["vision"] = "image input"
                elif kind in ("input_audio",):
                    need["audio_in"] = "audio input"
                elif kind in ("file", "document"):
                    need["documents"] = "document input"
                elif kind == "video_url":
                    need["video"] = "video input"
    return need


def _unsupported(alias: str, model: ModelConfig, needed: dict[str, str]) -> CapabilityNotSupported:
    """The refusal when no alias of the request can serve it: what the requested model lacks."""
    have = set(capabilities(model))
    for cap, what in needed.items():
        if cap not in have:
            return CapabilityNotSupported(f"model {alias!r} does not support {what} (capability {cap!r})")
    return CapabilityNotSupported(
        f"model {alias!r} has no deployment with every capability the request needs ({', '.join(needed)})"
    )


def _check_output_limit(alias: str, model: ModelConfig, req: ChatRequested) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        mt = req.params.max_tokens if field == "max_tokens" else req.params.extra.get(field)
        if isinstance(mt, int) and mt > model.max_output_tokens:
            raise ValidationError(
                f"{field}={mt} exceeds model {alias!r} output limit of {model.max_output_tokens}", param=field
            )


def _ordered(
    alias: str,
    model: ModelConfig,
    needed: dict[str, str],
    streamed: bool,
    stats: RoutingStats | None,
    rng: random.Random | None,
) -> list[Deployment]:
    """The alias's deployments that can serve the request, in its routing's order."""
    deps = order(alias, model, capable(model, needed), stats, streamed=streamed, rng=rng)
    return [Deployment(alias=alias, provider=d.provider, upstream_model=d.model) for d in deps]


#: Keys of a content part only the media-store sets (a caller's are dropped before planning).
GATEWAY_PART_KEYS = ("media", "pass_url")


def without_gateway_media(req: Executable) -> Executable:
    """``req`` without the gateway's own media keys in content parts, and without a
    transcription file's resolved media: only the media-store, reading and checking the bytes
    itself, may say what a reference holds (a caller's ``media`` could name another tenant's
    object, or bytes no check has seen)."""
    if isinstance(req, TranscribeRequested):
        if req.file.media is None:
            return req
        return req.model_copy(update={"file": req.file.model_copy(update={"media": None})})
    if not isinstance(req, ChatRequested):
        return req
    messages = None
    for i, m in enumerate(req.messages):
        if isinstance(m.content, list) and any(
            isinstance(p, dict) and any(k in p for k in GATEWAY_PART_KEYS) for p in m.content
        ):
            messages = messages or list(req.messages)
            content = [{k: v for k, v in p.items() if k not in GATEWAY_PART_KEYS} for p in m.content]
            messages[i] = m.model_copy(update={"content": content})
    return req if messages is None else req.model_copy(update={"messages": messages})

"""Wire contract: every event on every topic (DESIGN §3).

Events share one envelope. They are tolerant readers: unknown fields are ignored
so additive changes never break old consumers (STYLE 9). ``type`` names the
event and its version; a new incompatible shape is a new ``type``.
``schemas/`` holds the JSON Schema generated from these models
(``llmgw schemas write``) and a test fails when the two drift.
"""

from __future__ import annotations

import random as _random
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import ERROR_CODES

ErrorCode = Literal[ERROR_CODES]  # type: ignore[valid-type]


def new_id() -> str:
    """A random 128-bit id in hex (uuid4's randomness without its system call per id)."""
    return f"{_random.getrandbits(128):032x}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Envelope(Model):
    """Fields every event carries. Trace context travels in Kafka headers."""

    type: str
    event_id: str = Field(default_factory=new_id)
    request_id: str
    tenant_id: str
    user_id: str | None = None
    occurred_at: datetime = Field(default_factory=utcnow)


# --- request -----------------------------------------------------------------


class ReplyTo(Model):
    """Where chunks and the result of a request go (DESIGN §2)."""

    topic: str
    partition: int = Field(ge=0)


class Timeouts(Model):
    ttft_ms: int | None = Field(default=None, gt=0, description="Time to first token before the attempt fails")
    total_ms: int | None = Field(default=None, gt=0, description="Whole request, all attempts")


class ToolCallFunction(Model):
    name: str
    arguments: str = ""


class ToolCall(Model):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class Message(Model):
    """A chat message in OpenAI's shape. ``content`` is text or a list of parts."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class ChatParams(Model):
    """Sampling parameters. ``extra`` carries provider fields the gateway does not model."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, gt=0)
    stop: list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class ChatRequested(Envelope):
    """A caller asks for a chat completion. Topic ``llm.requests``, key tenant_id."""

    type: Literal["llm.request.v1"] = "llm.request.v1"
    operation: Literal["chat"] = "chat"
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    params: ChatParams = Field(default_factory=ChatParams)
    stream: bool = False
    fallbacks: list[str] = Field(default_factory=list)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    reply_to: ReplyTo | None = None
    client_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


# --- execution plan ------------------------------------------------------------


class Price(Model):
    """USD per million tokens."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    cached_input_per_mtok: float | None = None


class Deployment(Model):
    """One concrete place an alias can be served from."""

    alias: str
    provider: str
    provider_kind: str
    base_url: str
    upstream_model: str
    api_key_env: str | None = None
    price: Price = Field(default_factory=Price)


class ExecutionPlanned(Envelope):
    """The router accepted a request. Topic ``llm.exec``, key request_id."""

    type: Literal["llm.exec.v1"] = "llm.exec.v1"
    request: ChatRequested
    deployments: list[Deployment] = Field(min_length=1)
    retries: int = 0
    chunk_window_ms: int = 20
    ttft_ms: int | None = None
    total_ms: int | None = None
    accepted_at: datetime = Field(default_factory=utcnow)


# --- chunks and results ----------------------------------------------------------


class Usage(Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0


class ToolCallDelta(Model):
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class Delta(Model):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error", "cancelled"]


class ChunkEmitted(Envelope):
    """A piece of a streamed answer. ``seq`` is gap-free from 0; the last chunk has ``final``."""

    type: Literal["llm.chunk.v1"] = "llm.chunk.v1"
    seq: int = Field(ge=0)
    delta: Delta = Field(default_factory=Delta)
    final: bool = False
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    model: str | None = None
    provider: str | None = None
    ttft_ms: float | None = Field(default=None, description="First chunk only: the provider's time to first token")


class ErrorInfo(Model):
    code: ErrorCode
    message: str
    retryable: bool = False
    param: str | None = None
    upstream_status: int | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class AssistantMessage(Model):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None


class Latency(Model):
    ttft_ms: float | None = None
    total_ms: float | None = None
    provider_ms: float | None = None


class ResultProduced(Envelope):
    """The one answer to a request: a normalised response or a normalised error."""

    type: Literal["llm.result.v1"] = "llm.result.v1"
    status: Literal["ok", "error"]
    message: AssistantMessage | None = None
    finish_reason: FinishReason | None = None
    error: ErrorInfo | None = None
    alias: str | None = None
    provider: str | None = None
    model: str | None = None
    fallback_used: bool = False
    usage: Usage | None = None
    latency: Latency = Field(default_factory=Latency)
    streamed: bool = False


# --- usage, audit ------------------------------------------------------------------


class UsageRecorded(Envelope):
    """One per executed request. Topic ``llm.usage``, key tenant_id (co-partitioned with requests)."""

    type: Literal["llm.usage.v1"] = "llm.usage.v1"
    status: Literal["ok", "error", "cancelled"]
    alias: str
    provider: str | None = None
    model: str | None = None
    conversation_id: str | None = None
    client_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    ttft_ms: float | None = None
    total_ms: float | None = None
    error_code: ErrorCode | None = None
    streamed: bool = False


AuditAction = Literal[
    "started",
    "completed",
    "failed",
    "blocked",
    "fallback_triggered",
    "rate_limited",
    "budget_exceeded",
    "cancelled",
]


class AuditRecorded(Envelope):
    """Who did what, when. Topic ``llm.audit``, key tenant_id. No prompt text."""

    type: Literal["llm.audit.v1"] = "llm.audit.v1"
    action: AuditAction
    actor: str = Field(description="The service that recorded it")
    alias: str | None = None
    provider: str | None = None
    model: str | None = None
    client_id: str | None = None
    error_code: ErrorCode | None = None
    reason: str | None = None


# --- control --------------------------------------------------------------------------


class CancelRequested(Envelope):
    """Stop a request in flight. Topic ``llm.control``; every executor sees every cancel."""

    type: Literal["llm.cancel.v1"] = "llm.cancel.v1"
    reason: str = "client_cancelled"


AnyEvent = Annotated[
    ChatRequested
    | ExecutionPlanned
    | ChunkEmitted
    | ResultProduced
    | UsageRecorded
    | AuditRecorded
    | CancelRequested,
    Field(discriminator="type"),
]

#: type string -> model, for schema generation and decoding.
EVENT_MODELS: dict[str, type[Envelope]] = {
    m.model_fields["type"].default: m
    for m in (
        ChatRequested,
        ExecutionPlanned,
        ChunkEmitted,
        ResultProduced,
        UsageRecorded,
        AuditRecorded,
        CancelRequested,
    )
}

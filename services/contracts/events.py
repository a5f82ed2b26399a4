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

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from .errors import ErrorCode as ErrorCode  # re-exported: the codes events carry
from .errors import GatewayError


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


# --- media (README "Media") ------------------------------------------------------------


class MediaRef(Model):
    """Media the gateway holds: an object in FileStorage (the claim check, ``key``), its bytes
    inline in ``data`` (base64) only when at most ``media.inline_max_bytes``. A chat content part
    the media-store has resolved carries one under ``"media"``; generated media comes back as one
    with ``url`` (presigned GET) set by the media-store."""

    media_id: str
    mime_type: str
    bytes: int = Field(ge=0)
    key: str | None = Field(
        default=None, description="Object key in the media bucket, under the tenant's prefix"
    )
    data: str | None = Field(default=None, description="Base64 of the bytes, only when small")
    url: str | None = Field(default=None, description="Presigned GET URL (a bearer token: never logged)")
    url_expires_at: datetime | None = None
    filename: str | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    source: str | None = Field(
        default=None, description="Where the caller's media came from, with any query string redacted"
    )


class MediaSource(Model):
    """Media a request names (before the media-store resolves it): ``url`` is an ``https:`` /
    ``http:`` URL, a ``data:`` URL, an ``s3://`` reference or a file id (``file-...``); ``media``
    is set once resolved."""

    url: str = Field(min_length=1)
    filename: str | None = None
    mime_type: str | None = None
    media: MediaRef | None = None


# --- request -----------------------------------------------------------------


class ReplyTo(Model):
    """Where chunks and the result of a request go (DESIGN §2)."""

    topic: str
    partition: int = Field(ge=0)


class Timeouts(Model):
    ttft_ms: int | None = Field(
        default=None, gt=0, description="Time to first token before the attempt fails"
    )
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


class BatchItem(Model):
    """The batch a request is an item of (README "Batches"): priced with its deployment's
    ``batch_discount``; its job record and usage record name the batch and the line."""

    batch_id: str = Field(min_length=1)
    custom_id: str = Field(min_length=1)
    index: int = Field(ge=0, description="The line's place in the batch's input, from 0")


class RequestBase(Envelope):
    """What every request carries, whatever its operation. Topic ``llm.requests``, key tenant_id.

    Requests are one union discriminated by ``operation`` (``AnyRequest``): a new operation
    is a new member; the members already there do not change."""

    type: Literal["llm.request.v1"] = "llm.request.v1"
    operation: str
    timeouts: Timeouts = Field(default_factory=Timeouts)
    reply_to: ReplyTo | None = None
    client_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    stream: bool = Field(
        default=False, description="Answer in chunks; only chat and audio.speech stream, others reject it"
    )
    job: bool = Field(
        default=False,
        description="Run as an asynchronous job: the caller holds the request id as the job id and reads"
        " the job's state and result from llm.jobs (README: Jobs); nothing is sent to reply_to",
    )
    api_key: str | None = Field(
        default=None,
        description="The name of the API key the caller authenticated with (set by the edge; never the key"
        " or its hash); per-key rate limits and budgets count under it",
    )
    batch: BatchItem | None = Field(
        default=None, description="Set on the items of a batch (by the batch service): README Batches"
    )
    max_attempts: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="The most provider calls this request may make, every deployment and retry together"
        " (lower than the gateway's own limit to have an effect)",
    )


class ModelRequest(RequestBase):
    """A request served by a model alias (and its fallbacks)."""

    model: str = Field(min_length=1)
    fallbacks: list[str] = Field(default_factory=list)


class ChatRequested(ModelRequest):
    """A caller asks for a chat completion."""

    operation: Literal["chat"] = "chat"
    messages: list[Message] = Field(min_length=1)
    params: ChatParams = Field(default_factory=ChatParams)


#: How embeddings come back: lists of floats, or base64 of little-endian float32.
EncodingFormat = Literal["float", "base64"]


class EmbedRequested(ModelRequest):
    """A caller asks for embeddings of one or many inputs (one vector per input, in order)."""

    operation: Literal["embed"] = "embed"
    input: list[str] = Field(min_length=1, description="The texts to embed; a single text is a list of one")
    dimensions: int | None = Field(default=None, gt=0)
    encoding_format: EncodingFormat = "float"
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Provider fields the gateway does not model"
    )


ImageFormat = Literal["png", "jpeg", "webp"]


class ImageGenerateRequested(ModelRequest):
    """A caller asks for ``n`` images from a prompt (OpenAI's images API)."""

    operation: Literal["image.generate"] = "image.generate"
    prompt: str = Field(min_length=1, max_length=32_000)
    n: int = Field(default=1, ge=1, le=10)
    size: str | None = Field(default=None, pattern=r"^(auto|\d{2,5}x\d{2,5})$")
    quality: str | None = None
    response_format: Literal["url", "b64_json"] = "url"
    output_format: ImageFormat | None = None
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Provider fields the gateway does not model"
    )


SpeechFormat = Literal["mp3", "wav", "pcm", "opus", "flac", "aac"]


class SpeechRequested(ModelRequest):
    """A caller asks for ``input`` read aloud (OpenAI's speech API). ``stream`` (set for
    ``stream_format`` ``sse`` or a streamed HTTP answer) sends the audio as chunks."""

    operation: Literal["audio.speech"] = "audio.speech"
    input: str = Field(min_length=1, max_length=4096)
    voice: str = Field(min_length=1)
    response_format: SpeechFormat = "mp3"
    speed: float | None = Field(default=None, ge=0.25, le=4.0)
    stream_format: Literal["audio", "sse"] | None = None
    instructions: str | None = None
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Provider fields the gateway does not model"
    )


TranscriptionFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]


class TranscribeRequested(ModelRequest):
    """A caller asks for the text of an audio ``file`` (OpenAI's transcriptions API)."""

    operation: Literal["audio.transcribe"] = "audio.transcribe"
    file: MediaSource
    language: str | None = None
    prompt: str | None = None
    response_format: TranscriptionFormat = "json"
    timestamp_granularities: list[Literal["word", "segment"]] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Provider fields the gateway does not model"
    )


VideoSeconds = Literal["4", "8", "12"]


class VideoGenerateRequested(ModelRequest):
    """A caller asks for a video from a prompt (OpenAI's videos API); the provider works on it
    asynchronously: the executor submits it, polls it and keeps the result (README "Videos")."""

    operation: Literal["video.generate"] = "video.generate"
    prompt: str = Field(min_length=1, max_length=32_000)
    seconds: VideoSeconds | None = None
    size: str | None = Field(default=None, pattern=r"^\d{2,5}x\d{2,5}$")
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Provider fields the gateway does not model"
    )


class ModelFilter(Model):
    capability: str | None = None
    operation: str | None = None
    provider: str | None = None
    model: str | None = Field(default=None, description="One alias only")


class ModelsListRequested(RequestBase):
    """A caller asks which models its tenant may use (answered by the router)."""

    operation: Literal["models.list"] = "models.list"
    filter: ModelFilter = Field(default_factory=ModelFilter)


class RealtimeTurnRequested(ModelRequest):
    """A Realtime session asks for one turn's admission (answered by the router, never executed):
    the tenant's rate limits count it and its budget reserves the turn's worst case (the model's
    ``max_output_tokens``), settled by the turn's usage (same ``request_id``,
    ``<session id>/<turn>``). The caller asks at the session's open (turn 0) and after each
    turn's ``response.done`` for the next: a lease renewed while the session lives."""

    operation: Literal["realtime.turn"] = "realtime.turn"
    session_id: str = Field(min_length=1)
    turn: int = Field(ge=0)


class BatchRunRequested(ModelRequest):
    """A batch sent whole to a provider's own batch API (OpenAI's Batch API, Anthropic's Message
    Batches): the "provider" path of README "Batches". Sent by the batch service, admitted by the
    router like one request whose worst case is the whole file's (``prompt_tokens`` and
    ``max_output_tokens`` summed over its lines, at the batch discount), executed by the executor
    as a provider job (submitted once, then polled; resumed after a restart). Its items' outcomes
    are written as the items' own job records (``<batch id>.<index>``) with one usage record each."""

    operation: Literal["batch.run"] = "batch.run"
    batch_id: str = Field(min_length=1)
    endpoint: str = Field(description="/v1/chat/completions, /v1/embeddings or /v1/messages")
    requests_key: str = Field(description="FileStorage key of the items: one AnyRequest JSON per line")
    total: int = Field(ge=1)
    prompt_tokens: int = Field(default=0, ge=0, description="Estimated prompt tokens, every line together")
    max_output_tokens: int = Field(default=0, ge=0, description="Most output tokens, every line together")


def _operation(value: Any) -> str:
    """A request's operation; a request that names none is a chat request (the v1 shape
    from before other operations existed)."""
    if isinstance(value, dict):
        op = value.get("operation", "chat")
        return op if isinstance(op, str) else repr(op)
    return str(getattr(value, "operation", "chat"))


#: Every request, by ``operation``.
AnyRequest = Annotated[
    Annotated[ChatRequested, Tag("chat")]
    | Annotated[EmbedRequested, Tag("embed")]
    | Annotated[ImageGenerateRequested, Tag("image.generate")]
    | Annotated[SpeechRequested, Tag("audio.speech")]
    | Annotated[TranscribeRequested, Tag("audio.transcribe")]
    | Annotated[VideoGenerateRequested, Tag("video.generate")]
    | Annotated[RealtimeTurnRequested, Tag("realtime.turn")]
    | Annotated[ModelsListRequested, Tag("models.list")]
    | Annotated[BatchRunRequested, Tag("batch.run")],
    Discriminator(_operation),
]
#: Requests that are executed by a provider (an ``ExecutionPlanned`` carries one).
ExecutableRequest = Annotated[
    Annotated[ChatRequested, Tag("chat")]
    | Annotated[EmbedRequested, Tag("embed")]
    | Annotated[ImageGenerateRequested, Tag("image.generate")]
    | Annotated[SpeechRequested, Tag("audio.speech")]
    | Annotated[TranscribeRequested, Tag("audio.transcribe")]
    | Annotated[VideoGenerateRequested, Tag("video.generate")]
    | Annotated[RealtimeTurnRequested, Tag("realtime.turn")]
    | Annotated[BatchRunRequested, Tag("batch.run")],
    Discriminator(_operation),
]
#: Every operation a request may name.
OPERATIONS: tuple[str, ...] = (
    "chat",
    "embed",
    "image.generate",
    "audio.speech",
    "audio.transcribe",
    "video.generate",
    "realtime.turn",
    "models.list",
    "batch.run",
)
#: Chat content part types that carry media (the media-store resolves them before execution).
MEDIA_PART_TYPES: frozenset[str] = frozenset(
    {"image_url", "image", "file", "document", "input_audio", "video_url"}
)


def carries_media(req: RequestBase) -> bool:
    """Whether the media-store must resolve media in ``req`` before it is executed."""
    if isinstance(req, TranscribeRequested):
        return True
    if isinstance(req, ChatRequested):
        for m in req.messages:
            if isinstance(m.content, list) and any(p.get("type") in MEDIA_PART_TYPES for p in m.content):
                return True
    return False


#: Operations whose answer is media the media-store stores (``llm.media.out``).
MEDIA_OUT_OPERATIONS: frozenset[str] = frozenset({"image.generate", "audio.speech", "video.generate"})


# --- execution plan ------------------------------------------------------------


class Price(Model):
    """USD per million tokens, plus USD per unit for what is not counted in tokens
    (``per_unit`` keys are usage unit names: ``inputs``, ``images``, ``audio_seconds``,
    ``characters``, ``requests``, ...)."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    cached_input_per_mtok: float | None = None
    per_unit: dict[str, float] = Field(default_factory=dict)
    batch_discount: float = Field(
        default=0.5, ge=0, le=1, description="The share taken off a batch item's price (0.5: half price)"
    )


class Deployment(Model):
    """One concrete place an alias can be served from, by name only: the executor resolves
    the provider's URL and credentials, and the price, from its own configuration."""

    alias: str
    provider: str
    upstream_model: str


class RateLimitInfo(Model):
    """The binding rate-limit scope of each dimension at admission (the one with the least
    remaining), as the ``x-ratelimit-*`` headers report it. A dimension without a limit is
    absent. ``reset_*_s``: seconds until the oldest request in that scope's window leaves it."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None


class ExecutionPlanned(Envelope):
    """The router accepted a request. Topic ``llm.exec``, key request_id."""

    type: Literal["llm.exec.v1"] = "llm.exec.v1"
    request: ExecutableRequest
    deployments: list[Deployment] = Field(min_length=1)
    retries: int = 0
    chunk_window_ms: int = 20
    ttft_ms: int | None = None
    total_ms: int | None = None
    accepted_at: datetime = Field(default_factory=utcnow)
    ratelimit: RateLimitInfo | None = Field(
        default=None,
        description="Governed tenants only: the rate-limit numbers at admission, for the answer's headers",
    )


# --- chunks and results ----------------------------------------------------------


class Usage(Model):
    """Tokens, and ``units`` for what is not counted in tokens (``inputs`` for embeddings,
    ``images``, ``audio_seconds``, ``characters``, ...), each priced by ``Price.per_unit``."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    units: dict[str, float] = Field(default_factory=dict)


class ToolCallDelta(Model):
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class Delta(Model):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    audio: str | None = Field(
        default=None, description="audio.speech streams: base64 of the next audio bytes"
    )


class ErrorInfo(Model):
    code: ErrorCode
    message: str
    retryable: bool = False
    param: str | None = None
    upstream_status: int | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, err: GatewayError) -> ErrorInfo:
        """An error as events carry it: ``upstream_status`` has its own field, other details
        (structured-output violations, the provider's error type) stay in ``details``."""
        details = err.details
        return cls(
            code=err.code,
            message=err.message,
            retryable=err.retryable,
            param=err.param,
            upstream_status=details.get("upstream_status"),
            details={k: v for k, v in details.items() if k != "upstream_status"} if details else {},
        )


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error", "cancelled"]


class ChunkEmitted(Envelope):
    """A piece of a streamed answer. ``seq`` is gap-free from 0 within one ``run_id``; the last
    chunk has ``final``."""

    type: Literal["llm.chunk.v1"] = "llm.chunk.v1"
    seq: int = Field(ge=0)
    run_id: str | None = Field(
        default=None,
        description="The run of the plan that sent this chunk. A plan run again (its executor failed"
        " mid-stream) streams again from seq 0 under a new run_id: the restart marker. Readers keep the"
        " newest run's chunks and replay it against what they already delivered (README: Streams)",
    )
    delta: Delta = Field(default_factory=Delta)
    final: bool = False
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    model: str | None = None
    provider: str | None = None
    ttft_ms: float | None = Field(
        default=None, description="First chunk only: the provider's time to first token"
    )
    error: ErrorInfo | None = Field(
        default=None, description="Final chunk only: the request failed after streaming"
    )
    fallback: str | None = Field(
        default=None,
        description="First chunk only, when a deployment other than the first planned one answers:"
        " '<first planned> -> <answering>', each as alias/provider (the edge's x-llmgw-fallback header)",
    )
    ratelimit: RateLimitInfo | None = Field(
        default=None,
        description="First chunk only: the plan's rate-limit numbers (the edge's x-ratelimit-* headers)",
    )


class AssistantMessage(Model):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None


class Latency(Model):
    ttft_ms: float | None = None
    total_ms: float | None = None
    provider_ms: float | None = None
    queue_ms: float | None = Field(
        default=None,
        description="From the request's occurred_at to its executor taking it up (counts against total_ms)",
    )


class Embedding(Model):
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 of little-endian float32")


class EmbeddingsOutput(Model):
    kind: Literal["embeddings"] = "embeddings"
    data: list[Embedding]


class DeploymentInfo(Model):
    provider: str
    model: str
    price: Price
    usable: bool = Field(description="False while recent calls to it have failed")
    ttft_ms_avg: float | None = Field(
        default=None, description="Moving average of observed time to first token"
    )


class ModelInfo(Model):
    id: str
    description: str | None = None
    operations: list[str]
    capabilities: list[str]
    context_window: int
    max_output_tokens: int
    routing: str
    price: Price = Field(description="The first deployment's")
    usable: bool = Field(description="At least one deployment is usable")
    deployments: list[DeploymentInfo]


class ModelListOutput(Model):
    kind: Literal["models"] = "models"
    models: list[ModelInfo]


class GeneratedImage(Model):
    media: MediaRef
    revised_prompt: str | None = None


class ImagesOutput(Model):
    kind: Literal["images"] = "images"
    created: int = Field(description="Unix seconds, as the provider reported it")
    data: list[GeneratedImage]
    output_format: str | None = None
    size: str | None = None
    quality: str | None = None


class SpeechOutput(Model):
    kind: Literal["speech"] = "speech"
    media: MediaRef
    format: str = Field(description="The response_format the audio is in")


class TranscriptionOutput(Model):
    kind: Literal["transcription"] = "transcription"
    text: str
    format: str = Field(description="The response_format asked for")
    body: dict[str, Any] | str = Field(
        description="The answer in that format: an object for json / verbose_json, text for text / srt / vtt"
    )
    language: str | None = None
    duration_s: float | None = None


class VideoOutput(Model):
    kind: Literal["video"] = "video"
    media: MediaRef
    seconds: str | None = None
    size: str | None = None
    provider_id: str | None = Field(default=None, description="The provider's id of the video job")


#: What a non-chat operation answers; chat answers in ``ResultProduced.message``.
Output = Annotated[
    EmbeddingsOutput | ModelListOutput | ImagesOutput | SpeechOutput | TranscriptionOutput | VideoOutput,
    Field(discriminator="kind"),
]


class ResultProduced(Envelope):
    """The one answer to a request: a normalised response or a normalised error.
    A chat answer is ``message``; other operations answer in ``output``."""

    type: Literal["llm.result.v1"] = "llm.result.v1"
    status: Literal["ok", "error"]
    operation: str = "chat"
    message: AssistantMessage | None = None
    output: Output | None = None
    finish_reason: FinishReason | None = None
    error: ErrorInfo | None = None
    alias: str | None = None
    provider: str | None = None
    model: str | None = None
    fallback_used: bool = False
    fallback_from: str | None = Field(
        default=None, description="The first deployment tried, as alias/provider"
    )
    usage: Usage | None = None
    latency: Latency = Field(default_factory=Latency)
    attempts: int = Field(
        default=0, ge=0, description="Provider calls made, every deployment and retry together"
    )
    streamed: bool = False
    ratelimit: RateLimitInfo | None = Field(
        default=None, description="The plan's rate-limit numbers (the edge's x-ratelimit-* headers)"
    )


# --- usage, audit ------------------------------------------------------------------


class FailedAttempt(Model):
    """A deployment tried before the one that answered (its failure made the executor fall back)."""

    alias: str
    provider: str
    model: str
    error_code: ErrorCode


class UsageRecorded(Envelope):
    """One per executed request. Topic ``llm.usage``, key tenant_id (co-partitioned with requests)."""

    type: Literal["llm.usage.v1"] = "llm.usage.v1"
    status: Literal["ok", "error", "cancelled"]
    operation: str = "chat"
    alias: str
    provider: str | None = None
    model: str | None = None
    conversation_id: str | None = None
    client_id: str | None = None
    api_key: str | None = Field(
        default=None, description="The name of the API key the request came with, if any"
    )
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    ttft_ms: float | None = None
    total_ms: float | None = None
    error_code: ErrorCode | None = None
    streamed: bool = False
    fallback_used: bool = False
    units: dict[str, float] = Field(default_factory=dict, description="Usage beyond tokens, see Usage.units")
    failed_attempts: list[FailedAttempt] | None = Field(
        default=None,
        description="Deployments that failed before this one answered (or before the request failed)",
    )
    attempts: int = Field(
        default=0, ge=0, description="Provider calls made, every deployment and retry together"
    )
    batch_id: str | None = Field(default=None, description="The batch the request was an item of")
    custom_id: str | None = Field(default=None, description="Its line's custom_id in that batch")


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


class AuditContent(Model):
    """Prompt and completion text of an audited request: only for a tenant whose policy says
    ``audit.include_content: true`` (never otherwise). ``messages`` / ``input``: the request's
    messages or embedding inputs as the recording service held them (a pre-call hook's change
    applied: text the ``pii_redaction`` hook redacted stays redacted);
    ``completion``: the answer's text (outcome records of requests that produced one)."""

    messages: list[Message] | None = None
    input: list[str] | None = None
    completion: str | None = None


class AuditRecorded(Envelope):
    """Who did what, when. Topic ``llm.audit``, key tenant_id. No prompt or completion text
    unless the tenant's policy asks for ``content``."""

    type: Literal["llm.audit.v1"] = "llm.audit.v1"
    action: AuditAction
    operation: str | None = None
    actor: str = Field(description="The service that recorded it")
    alias: str | None = None
    provider: str | None = None
    model: str | None = None
    client_id: str | None = None
    error_code: ErrorCode | None = None
    reason: str | None = None
    content: AuditContent | None = Field(
        default=None, description="Prompt and completion text, only under audit.include_content: true"
    )


# --- governance ledger (the router's own topics) ---------------------------------------


class AdmissionRecorded(Envelope):
    """The router admitted a request of a governed tenant and reserved its tokens and cost.
    Topic ``llm.admissions``, key tenant_id (co-partitioned with requests). ``occurred_at`` is
    the admission time: the request counts in its scopes' windows for 60 s from it."""

    type: Literal["llm.admission.v1"] = "llm.admission.v1"
    api_key: str | None = None
    client_id: str | None = None
    tokens: int = Field(ge=0, description="Tokens reserved (prompt bound + output maximum or estimate)")
    cost_usd: float = Field(ge=0, description="Maximum cost reserved against budgets")
    until: datetime = Field(description="When the reservation lapses if no usage settles it")


#: One ledger entry: request_id, admitted at (epoch s), user, api key, client id, tokens, USD,
#: settled, reservation lapses at (epoch s). Tokens and USD are the reservation until settled,
#: then what the usage reported.
LedgerEntry = tuple[str, float, str | None, str | None, str | None, int, float, bool, float]


class LedgerSnapshot(Model):
    """A governed tenant's ledger as its router held it: state, not an event (so no request id).
    Topic ``llm.ledger`` (compacted, key tenant_id, co-partitioned with requests): the last
    snapshot of a tenant is what the next owner starts from, replaying ``llm.admissions`` from
    ``admissions_offset`` and ``llm.usage`` from ``usage_offset`` (the first offsets it does
    not cover) of the same partition."""

    type: Literal["llm.ledger.v1"] = "llm.ledger.v1"
    event_id: str = Field(default_factory=new_id)
    tenant_id: str
    partition: int = Field(ge=0)
    occurred_at: datetime = Field(default_factory=utcnow)
    admissions_offset: int = Field(ge=0)
    usage_offset: int = Field(ge=0)
    entries: list[LedgerEntry] = Field(
        default_factory=list, description="Requests still in the window or not yet settled"
    )
    spent: list[tuple[str, str, float]] = Field(
        default_factory=list,
        description="(scope, period, settled USD): scope 'tenant', 'user:<id>' or"
        " 'key:<name>'; period 'day:YYYY-MM-DD' or 'month:YYYY-MM'",
    )


# --- media flows ---------------------------------------------------------------------


class MediaProduced(Envelope):
    """A provider answered with media (``MEDIA_OUT_OPERATIONS``). Topic ``llm.media.out``, key
    request_id, sent by the executor instead of the result: the media-store stores each
    ``MediaRef`` of ``result.output`` (inline ``data``, or the staging object at ``key`` when the
    bytes are above ``media.inline_max_bytes``) under the tenant's prefix, sets its presigned
    ``url``, and sends ``result`` to ``reply_to`` (``llm.results`` when None)."""

    type: Literal["llm.media.v1"] = "llm.media.v1"
    reply_to: ReplyTo | None = None
    result: ResultProduced
    job: bool = Field(
        default=False, description="The request is a job: the media-store writes its final state"
    )


# --- jobs ------------------------------------------------------------------------------

JobStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
#: The states a job ends in.
TERMINAL_JOB_STATES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
#: The order of the states: a job's state only moves forward (a replayed writer's older state is ignored).
JOB_STATE_ORDER: dict[str, int] = {"pending": 0, "running": 1, "completed": 2, "failed": 2, "cancelled": 2}


class JobUpdated(Envelope):
    """The state of one job. Topic ``llm.jobs`` (compacted), key job_id (the request id of the
    job's request): the newest record of a key is the job. Written by the router (``pending``,
    or ``failed`` for a rejected request), the executor (``running``, the terminal state with the
    result) and the media-store (the terminal state of a job whose answer is media)."""

    type: Literal["llm.job.v1"] = "llm.job.v1"
    job_id: str
    status: JobStatus
    operation: str
    model: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: float | None = Field(default=None, ge=0, le=1)
    error: ErrorInfo | None = None
    result: ResultProduced | None = Field(
        default=None, description="The job's answer, when completed (its media by reference)"
    )
    result_ref: MediaRef | None = Field(
        default=None,
        description="Where the answer is instead (JSON in FileStorage), when larger than the inline limit",
    )
    provider_job: dict[str, Any] | None = Field(
        default=None,
        description="The provider-side job (id, where to poll), once submitted: resumed, never resubmitted",
    )
    params: dict[str, Any] | None = Field(
        default=None, description="What the request asked, for listings (video: prompt, seconds, size)"
    )
    batch: BatchItem | None = Field(default=None, description="The batch line this job runs, if any")


# --- batches (README "Batches") ----------------------------------------------------------

BatchStatus = Literal[
    "validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled"
]
BatchApi = Literal["openai", "anthropic"]


class BatchCounts(Model):
    """A batch's items by outcome; ``total`` minus the others is still processing."""

    total: int = Field(default=0, ge=0)
    succeeded: int = Field(default=0, ge=0)
    errored: int = Field(default=0, ge=0)
    canceled: int = Field(default=0, ge=0)
    expired: int = Field(default=0, ge=0)


class BatchLineError(Model):
    """Why a batch's input was refused (OpenAI's ``errors.data`` item)."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchUpdated(Envelope):
    """The state of one batch. Topic ``llm.batches`` (compacted), key ``<tenant>/<batch id>``;
    ``request_id`` is the batch id. Written by the edge (created; ``cancelling`` when a caller
    cancels) and by the batch service (every later state and the counts). States move only
    forward (``services.runtime.batches.newer``)."""

    type: Literal["llm.batch.v1"] = "llm.batch.v1"
    batch_id: str
    api_key: str | None = Field(
        default=None, description="The name of the API key that created it (its items count under it)"
    )
    api: BatchApi = Field(description="The API the batch was created through: how it is answered")
    status: BatchStatus
    endpoint: str = Field(description="/v1/chat/completions, /v1/embeddings or /v1/messages")
    model: str | None = Field(default=None, description="The alias of its lines when they share one")
    path: Literal["requests", "provider"] | None = Field(
        default=None,
        description="How its items run: as ordinary requests (bounded in flight), or through the"
        " provider's own batch API; chosen by the batch service",
    )
    input_file_id: str | None = None
    requests_key: str = Field(description="FileStorage key of the items: one AnyRequest JSON per line")
    completion_window_s: float = Field(gt=0)
    created_at: datetime
    expires_at: datetime
    in_progress_at: datetime | None = None
    finalizing_at: datetime | None = None
    completed_at: datetime | None = None
    failed_at: datetime | None = None
    expired_at: datetime | None = None
    cancelling_at: datetime | None = None
    cancelled_at: datetime | None = None
    counts: BatchCounts = Field(default_factory=BatchCounts)
    errors: list[BatchLineError] | None = None
    metadata: dict[str, str] | None = None
    prompt_tokens: int = Field(default=0, ge=0, description="Estimated prompt tokens, every line together")
    max_output_tokens: int = Field(default=0, ge=0, description="Most output tokens, every line together")
    run_id: str | None = Field(default=None, description="The provider path's batch.run request id")


# --- control --------------------------------------------------------------------------


class CancelRequested(Envelope):
    """Stop a request in flight. Topic ``llm.control``; every executor sees every cancel."""

    type: Literal["llm.cancel.v1"] = "llm.cancel.v1"
    reason: str = "client_cancelled"


# --- executor bookkeeping (the executor's own topics) ----------------------------------


class ExecutionFinished(Envelope):
    """A plan's outputs (result, usage, audit) are acknowledged: its request is not run again.
    Topic ``llm.finished``, key request_id, written to the partition number of the plan's
    ``llm.exec`` partition; read back by the executor that is assigned that partition."""

    type: Literal["llm.finished.v1"] = "llm.finished.v1"
    exec_partition: int = Field(ge=0, description="The llm.exec partition of the plan")
    exec_offset: int = Field(ge=0, description="The plan's offset in it")
    status: Literal["ok", "error", "cancelled"]


CircuitState = Literal["closed", "open", "half_open"]


class BreakerChanged(Model):
    """A deployment's circuit changed: state, not a request's event (so no request id). Topic
    ``llm.breakers`` (compacted, one partition, key ``alias/provider/model``): its last record per
    deployment is the circuit's state, which executors, routers and ``llmgw status`` read.

    * ``open``: the deployment is skipped until ``until`` (its last ``failures`` calls failed);
    * ``half_open``: ``by`` claimed the one probe request; the claim lapses at ``until``
      (the first claim after an ``open`` wins, later ones are void);
    * ``closed``: the probe (or a call) succeeded; the deployment carries traffic."""

    type: Literal["llm.breaker.v1"] = "llm.breaker.v1"
    event_id: str = Field(default_factory=new_id)
    occurred_at: datetime = Field(default_factory=utcnow)
    alias: str
    provider: str
    model: str = Field(description="The upstream model")
    state: CircuitState
    failures: int = Field(default=0, ge=0, description="Consecutive failed calls seen when it opened")
    until: datetime | None = Field(
        default=None, description="open: when the cool-down ends; half_open: when the probe's claim lapses"
    )
    by: str = Field(description="The executor instance that wrote it")
    claim: str | None = Field(default=None, description="half_open: the probe's claim id")
    error_code: ErrorCode | None = Field(default=None, description="The failure that opened it")
    reason: str | None = None

    @property
    def key(self) -> str:
        return f"{self.alias}/{self.provider}/{self.model}"


class SessionUsage(Model):
    """A Realtime session's usage: the sum of its turns' ``UsageRecorded`` (``turns`` of them)."""

    turns: int = Field(default=0, ge=0)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    units: dict[str, float] = Field(
        default_factory=dict,
        description="Text / audio / cached details: input_text_tokens, input_audio_tokens, ...",
    )

    def plus(self, usage: Usage, cost_usd: float) -> SessionUsage:
        """This usage and one more turn's."""
        units = dict(self.units)
        for k, v in usage.units.items():
            units[k] = units.get(k, 0.0) + v
        return SessionUsage(
            turns=self.turns + 1,
            prompt_tokens=self.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self.completion_tokens + usage.completion_tokens,
            cached_tokens=self.cached_tokens + usage.cached_tokens,
            total_tokens=self.total_tokens + usage.total_tokens,
            cost_usd=round(self.cost_usd + cost_usd, 10),
            units=units,
        )

    def wire(self) -> dict[str, Any]:
        """The ``usage`` of the ``session.usage`` server event a caller gets on close."""
        return {
            "turns": self.turns,
            "input_tokens": self.prompt_tokens,
            "output_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "cost_usd": self.cost_usd,
            **{k: int(v) for k, v in self.units.items()},
        }


class RealtimeFrame(Envelope):
    """One frame of a Realtime session (the OpenAI Realtime protocol over WebSocket), between the
    caller (edge or SDK) and the executor holding the provider's WebSocket. ``request_id`` is the
    session id and the key: a session's frames stay in order on one partition. Topic
    ``llm.realtime.in`` (caller -> executor) or ``llm.realtime.out`` (executor -> caller, on the
    partition the ``open`` frame's ``reply_to`` names).

    ``kind``: ``open`` (first frame: ``model`` alias, ``dialect``, ``reply_to``), ``event`` (one
    client or server event in ``data``, its JSON text unchanged), ``alive`` (the executor still
    holds the session; sent every second, so a caller knows when it died), ``close`` (either
    side ends the session; from the executor with ``close_code`` and ``reason``). An event above
    the inline limit (``media.inline_max_bytes``) travels by claim check: ``data_ref`` names its
    JSON text in FileStorage and ``data`` is empty (``services/runtime/realtime_claims.py``)."""

    type: Literal["llm.realtime.v1"] = "llm.realtime.v1"
    kind: Literal["open", "event", "alive", "close"]
    seq: int = Field(default=0, ge=0, description="Per session and direction, from 0")
    data: str | None = Field(default=None, description="event: one Realtime event as JSON text")
    data_ref: MediaRef | None = Field(
        default=None, description="event: where its JSON text is instead, when above the inline limit"
    )
    model: str | None = Field(default=None, description="open: the model alias")
    dialect: Literal["ga", "beta"] = "ga"
    reply_to: ReplyTo | None = Field(default=None, description="open: where the session's frames go")
    api_key: str | None = Field(default=None, description="open: the name of the caller's API key")
    client_id: str | None = None
    close_code: int | None = Field(default=None, description="close from the executor: WebSocket code")
    reason: str | None = None
    usage: SessionUsage | None = Field(
        default=None,
        description="event relaying a response.done: the session's usage through that turn "
        "(whose UsageRecorded is already on llm.usage)",
    )


SessionEndedBy = Literal["executor", "gateway"]


class RealtimeSessionSummarized(Envelope):
    """A Realtime session ended: its usage summary (UC-014). Topic ``llm.realtime.sessions``, key
    ``request_id`` = the session id. Not billable: the session's turns are, each its own
    ``UsageRecorded`` on ``llm.usage``, and ``usage`` is their sum.

    Written once per session, by the executor that held it (``ended_by: executor``) or, when that
    executor fell silent, by the caller that declared the session lost (``ended_by: gateway``,
    ``usage`` as of the last turn it was told of). Both may be written for one session (an
    executor silent but alive); the usage ledger keeps the executor's then. ``started_at`` is the
    ``open`` frame's ``occurred_at``, known alike to both."""

    type: Literal["llm.realtime.session.v1"] = "llm.realtime.session.v1"
    alias: str
    provider: str | None = None
    model: str | None = None
    api_key: str | None = Field(default=None, description="The name of the caller's API key")
    client_id: str | None = None
    dialect: Literal["ga", "beta"] = "ga"
    usage: SessionUsage = Field(default_factory=SessionUsage)
    started_at: datetime
    ended_at: datetime = Field(default_factory=utcnow)
    close_code: int
    close_reason: str = ""
    ended_by: SessionEndedBy


AnyEvent = Annotated[
    AnyRequest
    | ExecutionPlanned
    | ChunkEmitted
    | ResultProduced
    | UsageRecorded
    | AuditRecorded
    | CancelRequested
    | AdmissionRecorded
    | ExecutionFinished,
    Field(discriminator="type"),
]

#: type string -> model (for requests, the members' common base; see ``EVENT_SCHEMAS``).
EVENT_MODELS: dict[str, type[Envelope]] = {
    m.model_fields["type"].default: m
    for m in (
        RequestBase,
        ExecutionPlanned,
        ChunkEmitted,
        ResultProduced,
        UsageRecorded,
        AuditRecorded,
        CancelRequested,
        AdmissionRecorded,
        ExecutionFinished,
        MediaProduced,
        JobUpdated,
        BatchUpdated,
        RealtimeSessionSummarized,
    )
}

#: type string -> what the event's JSON Schema is generated from.
EVENT_SCHEMAS: dict[str, Any] = {
    **EVENT_MODELS,
    "llm.request.v1": AnyRequest,
    "llm.ledger.v1": LedgerSnapshot,
    "llm.breaker.v1": BreakerChanged,
    "llm.realtime.v1": RealtimeFrame,
}

"""The gateway configuration file (DESIGN §5): strict, validated once at start.

An invalid file stops start-up with ``ConfigError`` naming the key path and the
problem. Secrets never live here: providers name the env var holding their key,
tenants' API keys are stored as SHA-256 hashes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.contracts.events import Price

Capability = Literal[
    "chat",
    "stream",
    "tools",
    "vision",
    "json_schema",
    "embeddings",
    "documents",
    "audio_in",
    "audio_out",
    "video",
    "image_generation",
    "speech",
    "transcription",
    "video_generation",
    "realtime",
]
DEFAULT_CAPABILITIES: tuple[Capability, ...] = ("chat", "stream")  # of an alias that names none


#: The capability a model needs for each operation it serves.
OPERATION_CAPABILITY: dict[str, Capability] = {
    "chat": "chat",
    "embed": "embeddings",
    "image.generate": "image_generation",
    "audio.speech": "speech",
    "audio.transcribe": "transcription",
    "video.generate": "video_generation",
    "realtime.turn": "realtime",
}

Routing = Literal["weighted", "cheapest", "fastest"]


class ConfigError(ValueError):
    """The configuration file is invalid; the message names the key and the problem."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderConfig(Strict):
    kind: Literal["openai", "anthropic", "ollama", "gemini"]
    base_url: str
    api_key_env: str | None = None
    timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="The longest one call to this provider may take, from sending it to the answer's"
        " last byte; past it the call is a retryable provider_timeout (retried, or the next deployment)",
    )
    batch_api: bool = Field(
        default=False,
        description="The provider has its kind's batch API (OpenAI's Batch API, Anthropic's Message"
        " Batches): a batch whose lines all name one alias served first by it is sent there whole",
    )


class Backoff(Strict):
    """The wait before retry *k* of a deployment: a random time between 0 and
    ``min(max_ms, initial_ms * multiplier ** (k - 1))`` ("full jitter"), unless the provider
    said how long to wait (``Retry-After`` / ``retry-after-ms``)."""

    initial_ms: float = Field(default=200.0, gt=0)
    max_ms: float = Field(default=10_000.0, gt=0)
    multiplier: float = Field(default=2.0, ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> Backoff:
        if self.max_ms < self.initial_ms:
            raise ValueError(f"max_ms ({self.max_ms:g}) must be at least initial_ms ({self.initial_ms:g})")
        return self


class BreakerConfig(Strict):
    """A deployment whose last ``failures`` calls failed (provider errors and timeouts) is skipped
    for ``cooldown_s``; then one request probes it, and its outcome closes the circuit or opens it
    again (README "Circuit breaking"). ``enabled: false``: never skipped."""

    enabled: bool = True
    failures: int = Field(default=5, ge=1, le=1000)
    cooldown_s: float = Field(default=30.0, gt=0, le=86_400)


class DeploymentConfig(Strict):
    provider: str
    model: str = Field(description="Upstream model name")
    price: Price = Field(default_factory=Price)
    weight: float = Field(default=1.0, gt=0)
    capabilities: list[Capability] | None = Field(
        default=None, description="This deployment's, when they differ from the alias's"
    )
    max_batch_inputs: int = Field(default=2048, gt=0, description="Most inputs one embeddings call may carry")


class ModelConfig(Strict):
    deployments: list[DeploymentConfig] = Field(min_length=1)
    capabilities: list[Capability] = Field(default_factory=lambda: list(DEFAULT_CAPABILITIES))
    context_window: int = Field(default=8192, gt=0)
    max_output_tokens: int = Field(default=4096, gt=0)
    description: str | None = None
    routing: Routing = "weighted"
    retries: int | None = Field(
        default=None,
        ge=0,
        le=10,
        description="Retries of a retryable failure on each of this alias's deployments (default: defaults.retries)",
    )
    breaker: BreakerConfig | None = Field(
        default=None, description="This alias's deployments' circuit breaker (default: defaults.breaker)"
    )
    documents: Literal["native", "extract"] | None = Field(
        default=None,
        description="PDF parts: 'native' (the provider reads them; implied by the documents capability),"
        " 'extract' (the gateway sends their text, extracted with pypdf); unset without the documents"
        " capability: capability_not_supported",
    )
    pass_urls: bool = Field(
        default=False,
        description="Send a caller's https media URL to the provider as it is (the provider fetches it)"
        " instead of the bytes the gateway fetched and checked",
    )

    def operations(self) -> list[str]:
        return [op for op, cap in OPERATION_CAPABILITY.items() if cap in self.capabilities]

    def deployment_capabilities(self, d: DeploymentConfig) -> set[str]:
        return set(d.capabilities if d.capabilities is not None else self.capabilities)


class ApiKey(Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    user: str
    name: str | None = None


# --- rate limits and budgets (services/router/admission.py; README "Rate limits and budgets") ---


class Rate(Strict):
    """Limits of one scope over a sliding minute; ``None``: no limit in that dimension."""

    requests_per_min: int | None = Field(default=None, ge=0)
    tokens_per_min: int | None = Field(default=None, ge=0)

    @property
    def limited(self) -> bool:
        return self.requests_per_min is not None or self.tokens_per_min is not None


class Limits(Rate):
    """A tenant's rate limits: its own (``requests_per_min``, ``tokens_per_min``), each user's,
    each API key's (by ``name``) and each ``client_id``'s (``per_*``, with named overrides in
    ``users`` / ``keys`` / ``clients`` replacing the ``per_*`` default for that one).
    ``output_tokens``: the output a request without ``max_tokens`` reserves."""

    per_user: Rate | None = None
    per_key: Rate | None = None
    per_client: Rate | None = None
    users: dict[str, Rate] = Field(default_factory=dict)
    keys: dict[str, Rate] = Field(default_factory=dict)
    clients: dict[str, Rate] = Field(default_factory=dict)
    output_tokens: int = Field(
        default=256, ge=0, description="Reserved output when a request sets no max_tokens"
    )


class Budget(Strict):
    """``usd`` per calendar ``period`` (UTC) for the tenant, or for each of its users or keys
    (``per``), with ``overrides`` (user or key name -> USD) replacing ``usd`` for that one."""

    period: Literal["day", "month"]
    usd: float = Field(ge=0)
    per: Literal["tenant", "user", "key"] = "tenant"
    overrides: dict[str, float] = Field(default_factory=dict)


# --- hooks and plugins (services/runtime/hooks, services/runtime/entrypoints.py; README "Hooks and plugins") ---


class HookSpec(BaseModel):
    """One entry of a tenant's ``hooks``: ``name`` (a built-in hook or an ``llmgw.hooks`` entry
    point) and the hook's options beside it (``{name: blocklist, terms: [forbidden-topic]}``);
    a bare string is a hook without options."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, value: object) -> object:
        return {"name": value} if isinstance(value, str) else value

    def options(self) -> dict[str, object]:
        return dict(self.model_extra or {})


class PluginsConfig(Strict):
    """A tenant's Usage and Audit plugins by name: ``s3`` (the sinks' ledgers, the default),
    ``noop``, or an entry point of ``llmgw.usage`` / ``llmgw.audit``."""

    usage: str = "s3"
    audit: str = "s3"


class AuditPolicy(Strict):
    include_content: bool = Field(default=False, description="Prompt and completion text in audit records")


#: Names the Usage / Audit plugin groups resolve without an entry point (implemented by the sinks).
BUILTIN_PLUGINS = frozenset({"s3", "noop"})
#: The tenant of audit records about requests no tenant could be known for (an edge 401).
UNKNOWN_TENANT = "unknown"


class TenantConfig(Strict):
    api_keys: list[ApiKey] = Field(default_factory=list)
    allowed_models: list[str] = Field(default_factory=lambda: ["*"])
    # --- hooks and plugins ---
    hooks: list[HookSpec] = Field(default_factory=list)
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    audit: AuditPolicy = Field(default_factory=AuditPolicy)
    # --- rate limits and budgets ---
    limits: Limits | None = None
    budgets: list[Budget] = Field(default_factory=list)

    def allows(self, alias: str) -> bool:
        return "*" in self.allowed_models or alias in self.allowed_models

    @property
    def custom_usage(self) -> bool:
        """Whether an entry point is this tenant's Usage plugin (the router asks it at admission
        and tells it every usage: ``services/router/plugins.py``)."""
        return self.plugins.usage not in BUILTIN_PLUGINS

    @property
    def governed(self) -> bool:
        """Whether the router keeps a ledger for this tenant (it has limits, budgets or its own
        Usage plugin, whose usage the router's group then reads)."""
        return bool(self.budgets) or self.limits is not None or self.custom_usage

    @model_validator(mode="after")
    def _key_names(self) -> TenantConfig:
        names = {k.name for k in self.api_keys if k.name}
        refs = list((self.limits.keys if self.limits else {}).keys())
        refs += [n for b in self.budgets if b.per == "key" for n in b.overrides]
        unknown = sorted(set(refs) - names)
        if unknown:
            raise ValueError(
                f"limits/budgets name API keys this tenant does not have: {', '.join(unknown)}"
                f" (key names: {', '.join(sorted(names)) or 'none'})"
            )
        return self


class Policies(Strict):
    disabled_models: list[str] = Field(default_factory=list)
    require_client_id: bool = False
    max_prompt_bytes: int = Field(default=4 * 1024 * 1024, gt=0)


class Defaults(Strict):
    retries: int = Field(default=0, ge=0, le=10)
    max_attempts: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="The most provider calls one request may make, every deployment and retry together",
    )
    backoff: Backoff = Field(default_factory=Backoff)
    retry_after_max_ms: int = Field(
        default=30_000,
        ge=0,
        description="The longest Retry-After honoured: a provider asking for longer is given up for the"
        " next deployment",
    )
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    ttft_ms: int | None = Field(default=None, gt=0)
    total_ms: int = Field(default=600_000, gt=0)
    chunk_window_ms: int = Field(default=20, ge=0, le=1000)
    embed_batch_window_ms: float = Field(
        default=5, ge=0, le=1000, description="Embeddings micro-batching window (0: no batching)"
    )
    realtime_max_session_s: float = Field(
        default=1800, gt=0, description="A Realtime session is closed (1008) after this long"
    )
    realtime_idle_s: float = Field(
        default=300, gt=0, description="A Realtime session with no client event this long is closed (1008)"
    )


class MediaFetchConfig(Strict):
    """The safe fetcher (``services/runtime/media/fetch.py``): only public addresses are
    reached, unless the host is in ``allow_hosts`` (tests' loopback servers)."""

    allow_hosts: list[str] = Field(default_factory=list)
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    connect_timeout_s: float = Field(default=10.0, gt=0, le=600)
    max_redirects: int = Field(default=5, ge=0, le=5)


class MediaConfig(Strict):
    """Media in requests and answers (README "Media")."""

    bucket: str = "llmgw-media"
    inline_max_bytes: int = Field(
        default=262_144, ge=0, description="Above it, events carry an S3 reference instead of the bytes"
    )
    url_expiry_s: int = Field(default=3600, gt=0, le=604_800, description="Presigned GET URLs' lifetime")
    max_bytes: int = Field(default=52_428_800, gt=0, description="The largest media item accepted")
    max_pixels: int = Field(default=40_000_000, gt=0, description="The largest image, in pixels")
    max_audio_s: float = Field(default=3600.0, gt=0, description="The longest audio accepted")
    max_video_s: float = Field(default=3600.0, gt=0, description="The longest video accepted")
    allowed_types: list[str] = Field(
        default_factory=lambda: [
            "image/png",
            "image/jpeg",
            "image/gif",
            "image/webp",
            "application/pdf",
            "audio/wav",
            "audio/mpeg",
            "audio/flac",
            "audio/ogg",
            "audio/webm",
            "audio/mp4",
            "video/mp4",
            "video/webm",
        ]
    )
    fetch: MediaFetchConfig = Field(default_factory=MediaFetchConfig)


class JobsConfig(Strict):
    """Asynchronous jobs (README "Jobs") and the polling of asynchronous providers ("Videos")."""

    retention_s: float = Field(
        default=86_400.0, gt=0, description="How long a finished job stays readable; later: job_expired"
    )
    poll_interval_s: float = Field(
        default=2.0, gt=0, le=600, description="How often a provider's job is polled (unless it says when)"
    )
    poll_deadline_s: float = Field(
        default=3600.0, gt=0, description="How long a provider's job may take before the request fails"
    )
    poll_max_interval_s: float = Field(
        default=30.0, gt=0, le=3600, description="The longest wait between polls while nothing changes"
    )
    poll_backoff: float = Field(
        default=1.5,
        ge=1,
        le=10,
        description="Each poll without progress waits this much longer than the last",
    )
    result_inline_max_bytes: int | None = Field(
        default=None,
        ge=0,
        description="Above it a job's result is stored in S3 and its record names it (default: media.inline_max_bytes)",
    )

    @model_validator(mode="after")
    def _cap_above_interval(self) -> JobsConfig:
        if self.poll_max_interval_s < self.poll_interval_s:
            raise ValueError("poll_max_interval_s must be at least poll_interval_s")
        return self


class BatchesConfig(Strict):
    """Batches (README "Batches"): how many items run at once, so a batch never starves
    interactive traffic, and the limits of a batch's input."""

    max_in_flight: int = Field(
        default=8, ge=1, le=1000, description="Items of one batch running at once (the requests path)"
    )
    max_in_flight_total: int = Field(
        default=32,
        ge=1,
        le=10_000,
        description="Items of every batch together running at once, per batch service",
    )
    max_lines: int = Field(default=50_000, ge=1, le=1_000_000, description="Most lines one batch may have")
    max_file_bytes: int = Field(
        default=200 * 1024 * 1024, gt=0, description="Largest input file a batch may read"
    )
    completion_window_s: float = Field(
        default=86_400.0, gt=0, description="The completion window a batch gets (OpenAI's '24h')"
    )
    progress_interval_s: float = Field(
        default=0.5, gt=0, le=60, description="Most often a running batch's counts are written"
    )


class TypesConfig(Strict):
    """Where ``gts_ref`` tools are looked up (``services/runtime/types.py``): ``dir``, a directory
    of ``<gts id>.json`` schema files (a relative path is relative to the configuration file's
    directory), or ``url``, an HTTP registry (``GET {url}/entities/{gts id}``); not both.
    Neither: no registry, every reference is unknown."""

    dir: str | None = None
    url: str | None = None
    cache_ttl_s: float = Field(
        default=300.0, ge=0, description="How long an HTTP registry's answers are kept"
    )
    timeout_s: float = Field(default=5.0, gt=0, description="HTTP registry request timeout")

    @model_validator(mode="after")
    def _one_source(self) -> TypesConfig:
        if self.dir and self.url:
            raise ValueError("set dir or url, not both")
        return self


class ModelRegistryConfig(Strict):
    """Where the model catalog comes from when it is not this file's ``models``
    (``services/runtime/model_registry.py``): ``GET {url}/models`` answering
    ``{"models": {alias: <a models entry of this file>}}``, read again every ``cache_ttl_s``.
    This file's ``models`` serve until the registry first answers."""

    url: str
    cache_ttl_s: float = Field(default=60.0, gt=0, description="How long one read of the registry is used")


class DashboardConfig(Strict):
    """The usage dashboard at the edge (``GET /dashboard``, ``services/edge/api/dashboard.py``): the
    key whose SHA-256 is ``admin_key_sha256`` sees every tenant; a tenant's API key sees its own
    tenant only. None: no admin key (tenant keys still see their own tenant)."""

    admin_key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    cache_ttl_s: float = Field(
        default=10.0, ge=0, le=3600, description="How long one answer of /dashboard/data is served again"
    )


class GatewayConfig(Strict):
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)
    policies: Policies = Field(default_factory=Policies)
    defaults: Defaults = Field(default_factory=Defaults)
    types: TypesConfig = Field(default_factory=TypesConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    batches: BatchesConfig = Field(default_factory=BatchesConfig)
    model_registry: ModelRegistryConfig | None = None
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)

    @model_validator(mode="after")
    def _references(self) -> GatewayConfig:
        for alias, m in self.models.items():
            for i, d in enumerate(m.deployments):
                if d.provider not in self.providers:
                    raise ValueError(
                        f"models.{alias}.deployments.{i}.provider: unknown provider {d.provider!r}"
                        f" (known: {', '.join(sorted(self.providers))})"
                    )
        for name, t in self.tenants.items():
            for a in t.allowed_models:
                if a != "*" and a not in self.models and self.model_registry is None:  # else: the registry's
                    raise ValueError(f"tenants.{name}.allowed_models: unknown model {a!r}")
        _check_plugins(self.tenants)
        return self

    def deployment(self, alias: str, provider: str, upstream_model: str) -> DeploymentConfig | None:
        """The configured deployment of ``alias`` on ``provider`` serving ``upstream_model``."""
        model = self.models.get(alias)
        if model is None:
            return None
        return next(
            (d for d in model.deployments if d.provider == provider and d.model == upstream_model), None
        )

    def key_index(self) -> dict[str, tuple[str, str]]:
        """sha256(api key) -> (tenant, user)."""
        return {k.sha256: (t, k.user) for t, tc in self.tenants.items() for k in tc.api_keys}


def _check_plugins(tenants: Mapping[str, TenantConfig]) -> None:
    """Every hook and plugin a tenant names resolves (built in or an installed entry point), and
    every built-in hook takes its options; entry points are only looked up, not imported."""
    from .entrypoints import AUDIT, USAGE, PluginError, names
    from .hooks import build_hook, builtin_hooks, hook_names

    if UNKNOWN_TENANT in tenants:
        raise ValueError(
            f"tenants.{UNKNOWN_TENANT}: the name is reserved for audit records of unauthenticated requests"
        )
    if not any(t.hooks or t.plugins != PluginsConfig() for t in tenants.values()):
        return
    hooks, builtins = hook_names(), builtin_hooks()
    for name, t in tenants.items():
        for i, spec in enumerate(t.hooks):
            if spec.name not in hooks:
                raise ValueError(
                    f"tenants.{name}.hooks.{i}: unknown hook {spec.name!r} (known: {', '.join(sorted(hooks))})"
                )
            if spec.name in builtins:
                try:
                    build_hook(spec)
                except PluginError as exc:
                    raise ValueError(f"tenants.{name}.hooks.{i}: {exc}") from None
        for role, group in (("usage", USAGE), ("audit", AUDIT)):
            plugin = getattr(t.plugins, role)
            known = names(group) | BUILTIN_PLUGINS
            if plugin not in known:
                raise ValueError(
                    f"tenants.{name}.plugins.{role}: unknown {role} plugin {plugin!r}"
                    f" (known: {', '.join(sorted(known))})"
                )


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def _expand(text: str, env: Mapping[str, str]) -> str:
    """``${NAME}`` / ``${NAME:-default}`` in the file are replaced from the environment."""

    def sub(m: re.Match[str]) -> str:
        if m.group(1) in env:
            return env[m.group(1)]
        if m.group(2) is not None:
            return m.group(2)
        raise ConfigError(f"environment variable {m.group(1)} is referenced by the config but not set")

    return _VAR.sub(sub, text)


def load_config(path: Path, env: Mapping[str, str]) -> GatewayConfig:
    """The gateway configuration in ``path``, validated. ``${NAME}`` references are replaced from
    ``env``: a service passes ``settings.env``, the environment it read at start (``{}``: only
    ``${NAME:-default}`` references resolve, to their defaults)."""
    try:
        raw = yaml.safe_load(_expand(Path(path).read_text(), env))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return GatewayConfig.model_validate(raw)
    except pydantic.ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{loc}: {msg}")
        raise ConfigError(f"{path}: invalid configuration:\n  " + "\n  ".join(lines)) from None

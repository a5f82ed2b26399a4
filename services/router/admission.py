"""Admission of governed tenants' requests: rate limits, then budgets, then the reservation;
pure and synchronous (README "Rate limits and budgets").

``Governor.admit`` runs after ``plan`` in the router's handler, on the ``PartitionLedger`` of
the request's partition, which only this router instance owns. Checking and reserving are one
synchronous step, so two requests of a tenant are never admitted against the same state; that
and ownership make the limits exact with any number of routers. A tenant without ``limits``
or ``budgets`` costs one dictionary lookup.

Reservations: tokens = a bound of the prompt + ``max_tokens`` (or ``max_completion_tokens``),
else ``limits.output_tokens``; cost = that prompt bound, uncached, + ``max_tokens`` (else the
model's ``max_output_tokens``) + the request's units, priced by ``pricing.cost_usd`` for each
planned deployment, the largest of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from aiokafka.partitioner import murmur2

from services.contracts.events import (
    AdmissionRecorded,
    BatchRunRequested,
    ChatRequested,
    EmbedRequested,
    ExecutionPlanned,
    ImageGenerateRequested,
    RateLimitInfo,
    RealtimeTurnRequested,
    SpeechRequested,
    TranscribeRequested,
    Usage,
    VideoGenerateRequested,
)
from services.runtime import metrics
from services.runtime.config import GatewayConfig, ModelConfig, TenantConfig
from services.runtime.pricing import cost_usd

from . import budgets, limits
from .budgets import period_start
from .ledger import Entry, PartitionLedger

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

#: A video's length when the request names none (OpenAI's default).
VIDEO_SECONDS_DEFAULT = 4
#: Prompt tokens reserved per image part (a large image on the common providers).
IMAGE_TOKENS = 1600
#: Tokens a chat template adds per message, and once per request.
PER_MESSAGE_TOKENS, PER_REQUEST_TOKENS = 4, 3
#: How long after a request's ``total_ms`` its reservation lapses if no usage settled it.
LAPSE_GRACE_S = 60.0


@dataclass(frozen=True, slots=True)
class Grant:
    """An admission: the record to write to ``llm.admissions`` (``None`` for a request already
    admitted, e.g. redelivered) and the numbers for the answer's headers."""

    record: AdmissionRecorded | None
    ratelimit: RateLimitInfo | None


def tenant_partition(tenant_id: str, partitions: int) -> int:
    """The partition a record keyed ``tenant_id`` lands in (the producers' default partitioner)."""
    h: int = murmur2(tenant_id.encode())
    return (h & 0x7FFFFFFF) % partitions


def prompt_bound(req: Executable) -> int:
    """Tokens the prompt cannot exceed with a byte-level tokenizer: UTF-8 bytes of its text,
    tool definitions and response schema, + 4 per message and 3; ``IMAGE_TOKENS`` per image."""
    if isinstance(req, EmbedRequested):
        return sum(len(t.encode()) for t in req.input)
    if isinstance(req, BatchRunRequested):  # the batch service's estimate, every line together
        return req.prompt_tokens
    if isinstance(req, ImageGenerateRequested | VideoGenerateRequested):
        return len(req.prompt.encode()) + PER_REQUEST_TOKENS
    if isinstance(req, SpeechRequested):
        return len(req.input.encode()) + len((req.instructions or "").encode()) + PER_REQUEST_TOKENS
    if isinstance(req, TranscribeRequested):
        return len((req.prompt or "").encode()) + PER_REQUEST_TOKENS
    if isinstance(req, RealtimeTurnRequested):  # the session's context is the provider's: unknown here
        return PER_REQUEST_TOKENS
    n = PER_REQUEST_TOKENS
    for m in req.messages:
        n += PER_MESSAGE_TOKENS
        c = m.content
        if isinstance(c, str):
            n += len(c.encode())
        elif c:
            for part in c:
                if part.get("type") in ("image_url", "image"):
                    n += IMAGE_TOKENS
                else:
                    n += len(orjson.dumps(part))
        if m.tool_calls:
            n += sum(len(tc.function.name) + len(tc.function.arguments.encode()) for tc in m.tool_calls)
    p = req.params
    if p.tools:
        n += len(orjson.dumps(p.tools))
    if p.response_format:
        n += len(orjson.dumps(p.response_format))
    return n


def max_output(req: Executable) -> int | None:
    """The request's own output limit (``max_tokens`` or ``max_completion_tokens``), if any."""
    if isinstance(req, EmbedRequested | SpeechRequested | VideoGenerateRequested):
        return 0
    if isinstance(req, BatchRunRequested):
        return req.max_output_tokens
    if not isinstance(req, ChatRequested):
        return None  # images and transcripts: up to the model's max_output_tokens
    if req.params.max_tokens is not None:
        return req.params.max_tokens
    mct = req.params.extra.get("max_completion_tokens")
    return mct if isinstance(mct, int) and mct > 0 else None


def request_units(req: Executable, max_audio_s: float = 3600.0) -> dict[str, float]:
    """The units a request will be billed at most, besides tokens: embeddings' inputs, images,
    characters read aloud, seconds of audio transcribed (its duration when known, else the
    longest audio accepted, ``media.max_audio_s``)."""
    if isinstance(req, EmbedRequested):
        return {"inputs": float(len(req.input))}
    if isinstance(req, BatchRunRequested):  # an embeddings batch: one input per line at least
        return {"inputs": float(req.total)} if req.endpoint == "/v1/embeddings" else {}
    if isinstance(req, ImageGenerateRequested):
        return {"images": float(req.n)}
    if isinstance(req, SpeechRequested):
        return {"characters": float(len(req.input))}
    if isinstance(req, VideoGenerateRequested):
        return {"video_seconds": float(req.seconds or VIDEO_SECONDS_DEFAULT)}
    if isinstance(req, TranscribeRequested):
        media = req.file.media
        seconds = media.duration_s if media is not None and media.duration_s is not None else max_audio_s
        return {"audio_seconds": float(seconds)}
    return {}


def max_cost(
    req: Executable,
    plan: ExecutionPlanned,
    catalog: Mapping[str, ModelConfig],
    prompt: int,
    max_audio_s: float = 3600.0,
) -> float:
    """The most the request can cost on any of its planned deployments (``pricing.cost_usd``)."""
    units = request_units(req, max_audio_s)
    own = max_output(req)
    worst = 0.0
    for d in plan.deployments:
        model = catalog.get(d.alias)
        if model is None:
            continue
        dep = next(
            (x for x in model.deployments if x.provider == d.provider and x.model == d.upstream_model), None
        )
        if dep is None:
            continue
        out = own if own is not None else model.max_output_tokens
        usage = Usage(prompt_tokens=prompt, completion_tokens=out, total_tokens=prompt + out, units=units)
        batch = req.batch is not None or isinstance(req, BatchRunRequested)
        worst = max(worst, cost_usd(usage, dep, batch=batch))
    return worst


class Governor:
    """Admission decisions for the governed tenants of ``config`` (``catalog``: the Model
    Registry's current catalog, which prices reservations)."""

    def __init__(self, config: GatewayConfig, catalog: Callable[[], Mapping[str, ModelConfig]]):
        self.tenants: dict[str, TenantConfig] = {t: tc for t, tc in config.tenants.items() if tc.governed}
        self.catalog = catalog
        self.default_total_ms = config.defaults.total_ms
        self.max_audio_s = config.media.max_audio_s

    def partitions(self, count: int) -> set[int]:
        """The partitions (of ``count``) holding a governed tenant."""
        return {tenant_partition(t, count) for t in self.tenants}

    def tenants_of(self, partition: int, count: int) -> dict[str, TenantConfig]:
        return {t: tc for t, tc in self.tenants.items() if tenant_partition(t, count) == partition}

    def replay_since(self, tenants: Mapping[str, TenantConfig], now: float) -> float:
        """How far back a rebuild must read: the start of the longest period of ``tenants``'
        budgets (else one window), less the longest a request's reservation may stay open."""
        lifetime = self.default_total_ms / 1000 + LAPSE_GRACE_S
        start = now - limits.WINDOW_S
        for tc in tenants.values():
            for b in tc.budgets:
                start = min(start, period_start(b.period, now))
        return start - lifetime

    def admit(
        self,
        req: Executable,
        plan: ExecutionPlanned,
        ledger: PartitionLedger,
        now: float | None = None,
    ) -> Grant | None:
        """``None`` for an ungoverned tenant; else a ``Grant`` (the request is counted), or the
        ``RateLimited`` / ``BudgetExceeded`` that refuses it (nothing is counted)."""
        t = ledger.tenant(req.tenant_id)
        if t is None:
            return None
        now = time.time() if now is None else now
        t.evict(now)
        user, key, client = req.user_id, req.api_key, req.client_id
        scopes = [limits.Scope(name, rate, t.window(wid)) for wid, name, rate in t.scopes(user, key, client)]
        if t.known(req.request_id):  # redelivered: counted once already
            return Grant(None, limits.info(scopes, 0, 0, now) if scopes else None)
        prompt = prompt_bound(req)
        tokens = 0
        info = None
        if scopes and (rates := t.config.limits) is not None:  # scopes come from the tenant's limits
            out = max_output(req)
            tokens = prompt + (out if out is not None else rates.output_tokens)
            info = limits.check(scopes, tokens, now)
        cost = 0.0
        if t.budgeted:
            cost = max_cost(req, plan, self.catalog(), prompt, self.max_audio_s)
            applying = budgets.applicable(req.tenant_id, t.config, user, key, now)
            budgets.check(applying, t.spent, t.reserved, cost)
            metrics.budget_left(applying, t.spent, t.reserved, cost)
        until = now + (plan.total_ms or self.default_total_ms) / 1000 + LAPSE_GRACE_S
        t.add(
            Entry(req.request_id, now, user, key, client, tokens, cost, until),
            now,
            [s.window for s in scopes],
        )
        record = AdmissionRecorded(
            request_id=req.request_id,
            tenant_id=req.tenant_id,
            user_id=user,
            occurred_at=_dt(now),
            api_key=key,
            client_id=client,
            tokens=tokens,
            cost_usd=cost,
            until=_dt(until),
        )
        return Grant(record, info)


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)

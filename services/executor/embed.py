"""Running ``embed`` plans: each provider call goes through the micro-batcher (``batcher.py``).

Attempts, retries and fallback are the same as chat's (``attempts.py``), and so are the
guarantees (``app.py``): a cancel stops the request (its inputs leave a batch still open);
``total_ms`` bounds the whole request. A deployment whose provider kind has no embeddings
adapter is ``capability_not_supported`` before any HTTP, and the next deployment is tried.
"""

from __future__ import annotations

import asyncio

from services.contracts.errors import GatewayError
from services.contracts.events import Embedding, EmbeddingsOutput, EmbedRequested, ExecutionPlanned

from .attempts import Until
from .batcher import EmbedBatcher
from .handlers import Outcome, QuietCall, SecretLookup
from .providers._embeddings import Embeddings
from .providers.base import EmbeddingsAdapter
from .providers.registry import adapter_for
from .providers.transport import HttpTransport
from .targets import Target
from .watch import Watched


class EmbedRunner:
    """Runs one executor's embed plans through one shared ``EmbedBatcher``."""

    def __init__(self, *, http: HttpTransport, secret: SecretLookup, window_ms: float):
        self.http = http
        self.secret = secret
        self.batcher = EmbedBatcher(self._call, window_ms)

    async def _call(self, req: EmbedRequested, target: Target) -> Embeddings:
        """One provider call of a batch; a refusal carries the wait its response asked for."""
        adapter: EmbeddingsAdapter = adapter_for(target.kind, "embed")
        watch = Watched(self.http)
        try:
            return await adapter.embed(watch, req, target, self.secret(target.api_key_env))
        except GatewayError as err:
            watch.annotate(err)
            raise

    async def aclose(self) -> None:
        await self.batcher.aclose()

    def start(self, plan: ExecutionPlanned) -> EmbedCall:
        assert isinstance(plan.request, EmbedRequested)
        return EmbedCall(self.batcher, plan.request, plan.total_ms)


class EmbedCall(QuietCall):
    """The provider calls of one embed plan (``attempts.Call``): each a share of a batch."""

    def __init__(self, batcher: EmbedBatcher, req: EmbedRequested, total_ms: int | None):
        self._batcher, self._req, self._total_ms = batcher, req, total_ms

    async def __call__(self, target: Target, fallback_from: Target | None, until: Until) -> Outcome:
        adapter_for(target.kind, "embed")  # capability_not_supported before any HTTP
        try:
            async with asyncio.timeout_at(until.at):  # a request past it leaves its batch
                share = await self._batcher.embed(self._req, target)
        except TimeoutError:
            raise until.timed_out(target, self._total_ms) from None
        return Outcome(
            share.usage,
            target,
            share.model or target.upstream_model,
            provider_ms=share.provider_ms,
            output=EmbeddingsOutput(
                data=[Embedding(index=i, embedding=v) for i, v in enumerate(share.vectors)]
            ),
        )

"""Running ``chat`` plans: one ``ChatCall`` per plan makes its provider calls.

A streamed plan has one ``ChunkEmitter`` for all its attempts: the caller sees one stream,
``seq`` gap-free from 0, whichever deployment answers. Once a chunk has gone out no other
attempt is made (``Final``): the caller already holds part of this answer. A whole answer is
shown to the tenant's post-response hooks before it is published.
"""

from __future__ import annotations

import asyncio
import functools

from services.contracts.errors import GatewayError
from services.contracts.events import ChatRequested, ChunkEmitted, ExecutionPlanned
from services.runtime.hooks import TenantHooks
from services.runtime.kafka import Publisher
from services.runtime.media.documents import as_text_parts, is_pdf_part
from services.runtime.replies import chunk_target
from services.runtime.topics import Topics

from .attempts import Final, Until
from .chunker import ChunkEmitter
from .handlers import CheckAnswer, Outcome, SecretLookup, chunk_template, complete_once, stream_once
from .hooks import check_answer, response_guard
from .providers.transport import HttpTransport
from .structured import OutputContract, contract_for
from .targets import Target


class ChatRunner:
    def __init__(
        self,
        *,
        publisher: Publisher,
        topics: Topics,
        http: HttpTransport,
        secret: SecretLookup,
        hooks: TenantHooks,
    ):
        self.publisher = publisher
        self.topics = topics
        self.http = http
        self.secret = secret
        self.hooks = hooks

    def start(self, plan: ExecutionPlanned) -> ChatCall:
        req = plan.request
        assert isinstance(req, ChatRequested)
        post = self.hooks.post(req.tenant_id)  # None: the tenant has no post-response hooks
        if not req.stream:
            check = functools.partial(check_answer, post, req) if post is not None else None
            return ChatCall(self, plan, None, check)
        topic, partition = chunk_target(req, self.topics)
        publisher, rid = self.publisher, req.request_id

        async def send(chunk: ChunkEmitted) -> asyncio.Future[object]:
            return await publisher.publish(topic, chunk, key=rid, partition=partition)

        template = chunk_template(plan)
        template.ratelimit = plan.ratelimit  # on the first chunk: the edge's response head
        guard = response_guard(post, req) if post is not None else None
        return ChatCall(self, plan, ChunkEmitter(send, template, plan.chunk_window_ms, guard), None)


class ChatCall:
    """The provider calls of one chat plan (``attempts.Call``)."""

    def __init__(
        self,
        runner: ChatRunner,
        plan: ExecutionPlanned,
        emitter: ChunkEmitter | None,
        check: CheckAnswer | None,
    ):
        self._runner = runner
        self._plan = plan
        self._emitter = emitter
        self._check = check
        self._contract: OutputContract | None = None
        self._extracted: ExecutionPlanned | None = None

    def prepare(self) -> None:
        """Before any provider call: the request's output contract (an invalid schema raises
        ``ValidationError``, failing the request with no call made)."""
        req = self._plan.request
        rf = req.params.response_format if isinstance(req, ChatRequested) else None
        self._contract = contract_for(rf) if rf else None

    @property
    def acks(self) -> list[asyncio.Future[object]]:
        """The chunks' acks (awaited with the outcome's before the plan is committed)."""
        return self._emitter.acks if self._emitter is not None else []

    def close(self) -> None:
        if self._emitter is not None:
            self._emitter.cancel_timer()

    async def _plan_for(self, target: Target) -> ExecutionPlanned:
        """The plan as ``target`` gets it: for an alias with ``documents: extract``, its PDF parts
        replaced by their text (extracted once, with pypdf, off the event loop)."""
        if target.documents != "extract" or not _has_pdf(self._plan.request):
            return self._plan
        if self._extracted is None:
            req = self._plan.request
            assert isinstance(req, ChatRequested)
            messages = await asyncio.to_thread(as_text_parts, req.messages)
            extracted = req.model_copy(update={"messages": messages})
            self._extracted = self._plan.model_copy(update={"request": extracted})
        return self._extracted

    async def __call__(self, target: Target, fallback_from: Target | None, until: Until) -> Outcome:
        r, emitter = self._runner, self._emitter
        key = r.secret(target.api_key_env)
        plan = await self._plan_for(target)
        if emitter is None:
            outcome = await complete_once(plan, target, r.http, key, until, self._contract)
            if self._check is not None and outcome.error is None:
                try:
                    await self._check(outcome)
                except GatewayError as err:  # a hook that fails fails the answer: no other attempt
                    raise Final(err) from err
            return outcome
        if fallback_from is not None:
            emitter.set_fallback(f"{fallback_from.label} -> {target.label}")
        try:
            return await stream_once(plan, target, r.http, key, emitter, until, self._contract)
        except GatewayError as err:
            if emitter.sent_any:
                raise Final(err) from err
            raise


def _has_pdf(req: object) -> bool:
    return isinstance(req, ChatRequested) and any(
        isinstance(m.content, list) and any(is_pdf_part(p) for p in m.content) for m in req.messages
    )

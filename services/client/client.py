"""Python SDK for producing services: request/reply over Kafka.

Each client instance reads one partition of ``llm.replies`` (its reply address,
named in every request it sends), so it never reads the whole reply stream.
Several instances may share a partition; each keeps only its own requests' replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic
from aiokafka.structs import ConsumerRecord

from services.contracts.errors import GatewayError, GatewayTimeout
from services.contracts.events import (
    CancelRequested,
    ChatParams,
    ChatRequested,
    ChunkEmitted,
    EmbedRequested,
    EncodingFormat,
    ErrorInfo,
    ModelFilter,
    ModelInfo,
    ModelsListRequested,
    RealtimeTurnRequested,
    ReplyTo,
    RequestBase,
    ResultProduced,
    SpeechRequested,
    Timeouts,
    new_id,
)
from services.runtime import telemetry
from services.runtime.codec import decode_any
from services.runtime.kafka import DeadLetters, Publisher, validation_reason
from services.runtime.settings import ROOT
from services.runtime.tail import Malformed, Tail
from services.runtime.topics import Topics

from .jobs import JobOperations
from .media import INLINE_MAX_BYTES, MediaOperations
from .realtime import RealtimeHub, RealtimeSession
from .streams import StreamCheck

if TYPE_CHECKING:
    from services.runtime.media.storage import FileStorage

log = logging.getLogger(__name__)
_PARAMS = set(ChatParams.model_fields) - {"extra"}
#: Request fields every operation takes as keyword arguments (``api_key``: the name of the key a
#: caller is counted under for per-key limits and budgets; SDK callers are trusted services).
_COMMON = ("metadata", "request_id", "client_id", "user_id", "tenant_id", "api_key", "max_attempts")
_END = object()


def error_from(e: ErrorInfo, request_id: str) -> GatewayError:
    """The gateway error an event carries, with its details (``upstream_status`` among them)."""
    err = GatewayError.from_wire(
        e.code, e.message, param=e.param, details={"upstream_status": e.upstream_status, **e.details}
    )
    err.request_id = request_id
    return err


def raise_for(result: ResultProduced) -> ResultProduced:
    """The result, or its error raised; the error's ``details["ratelimit"]`` has the rate-limit
    numbers of the result when it carries them (the edge's ``x-ratelimit-*`` headers)."""
    if result.status == "error":
        assert result.error is not None
        err = error_from(result.error, result.request_id)
        if result.ratelimit is not None and "ratelimit" not in err.details:
            err.details["ratelimit"] = result.ratelimit.model_dump(exclude_none=True)
        raise err
    return result


def _undecodable(request_id: str, tenant_id: str, exc: Exception) -> ResultProduced:
    """The answer a caller gets for a reply this SDK cannot read (e.g. an operation's output
    from a newer gateway): an ``internal_error`` naming the problem, not a wait until timeout."""
    return ResultProduced(
        request_id=request_id,
        tenant_id=tenant_id,
        status="error",
        error=ErrorInfo(
            code="internal_error", message=f"reply to {request_id} could not be read by this SDK: {exc}"
        ),
    )


class GatewayClient(MediaOperations, JobOperations):
    """``async with GatewayClient(bootstrap_servers=..., tenant_id=..., user_id=...) as gw``.

    ``timeout_s`` bounds each call: past it the call raises ``GatewayTimeout`` and a
    cancel event stops the provider call. ``storage`` (the gateway's media bucket) lets
    ``transcribe`` upload files above ``inline_max_bytes`` and ``media_bytes`` read media by key.
    """

    def __init__(
        self,
        bootstrap_servers: str = "127.0.0.1:9092",
        tenant_id: str = "demo",
        user_id: str | None = None,
        *,
        client_id: str | None = None,
        timeout_s: float = 120.0,
        topics_path: Path | None = None,
        topic_prefix: str = "",
        reply_partition: int | None = None,
        storage: FileStorage | None = None,
        inline_max_bytes: int = INLINE_MAX_BYTES,
    ):
        self.storage = storage
        self.inline_max_bytes = inline_max_bytes
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.client_id = client_id
        self.timeout_s = timeout_s
        self.topics = Topics.load(topics_path or ROOT / "topics.yaml", topic_prefix)
        self._bootstrap = bootstrap_servers
        self._publisher = Publisher(bootstrap_servers, client_id=f"client-{tenant_id}")
        self._reply_partition = reply_partition
        self._replies: Tail | None = None
        self._waiting: dict[str, asyncio.Queue[Any]] = {}
        self._requests: dict[str, RequestBase] = {}
        self.reply_to: ReplyTo | None = None
        self._realtime: RealtimeHub | None = None

    async def __aenter__(self) -> GatewayClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        await self._publisher.start()
        topic = self.topics.replies.name
        parts = sorted(await self._publisher.partitions_for(topic))
        if not parts:
            raise GatewayError(f"reply topic {topic} does not exist (run `llmgw topics apply`)")
        partition = self._reply_partition if self._reply_partition is not None else random.choice(parts)
        self._replies = Tail(
            self._bootstrap,
            topic,
            self._on_reply,
            partitions=[partition],
            client_id=f"client-{self.tenant_id}",
            # a reply this SDK cannot read, to a call it is waiting for: its caller is told, and
            # the record goes to llm.dlq (bounded retries: the reply reader serves every call)
            dead_letters=DeadLetters(
                self._publisher, self.topics.dlq.name, f"client-{self.tenant_id}", retry_s=10.0
            ),
        )
        await self._replies.start()  # from the end: replies to our first request come after this
        self.reply_to = ReplyTo(topic=topic, partition=partition)
        rt = self.topics.realtime_out
        self._realtime = RealtimeHub(
            self._bootstrap,
            self._publisher,
            self.topics,
            partition % rt.partitions,
            f"client-{self.tenant_id}",
            storage=self.storage,
            inline_max_bytes=self.inline_max_bytes,
        )

    async def aclose(self) -> None:
        await self.close_jobs()
        if self._realtime is not None:
            await self._realtime.aclose()
        if self._replies is not None:
            await self._replies.aclose()
        await self._publisher.aclose()

    def _on_reply(self, r: ConsumerRecord) -> None:
        """One record of the reply partition: to the call waiting for its request, if any (only
        those are decoded: another client's replies cost nothing here). One that does not
        decode ends its call with ``internal_error`` and raises ``Malformed`` (the tail
        dead-letters it)."""
        rid = r.key.decode(errors="replace") if r.key else ""
        q = self._waiting.get(rid)
        if q is None:
            return  # another client's reply, or one we stopped waiting for
        try:
            q.put_nowait(decode_any(r.value or b""))
        except Exception as exc:  # a bad reply must not stop replies to everyone else
            log.error("undecodable reply at %s@%d: %s", r.topic, r.offset, exc)
            q.put_nowait(_undecodable(rid, self.tenant_id, exc))
            why = validation_reason(exc) if isinstance(exc, pydantic.ValidationError) else repr(exc)
            raise Malformed(f"reply: {why}") from exc

    def realtime(self, model: str, **kw: Any) -> AbstractAsyncContextManager[RealtimeSession]:
        """``async with gw.realtime(model="demo-realtime") as session``: a Realtime session (the
        OpenAI Realtime protocol's events) held by an executor. ``await session.send({...})`` sends
        a client event; ``async for event in session`` yields server events (dicts) until it
        closes. Keywords: ``dialect`` (``"ga"``, or ``"beta"`` for the beta event names),
        ``tenant_id``, ``user_id``, ``api_key``, ``client_id``, ``silence_s``."""
        if self._realtime is None:
            raise GatewayError("the client is not started (use `async with GatewayClient(...)`)")
        kw.setdefault("tenant_id", self.tenant_id)
        kw.setdefault("user_id", self.user_id)
        kw.setdefault("client_id", self.client_id)
        tenant_id, user_id, api_key, client_id = (
            kw["tenant_id"],
            kw["user_id"],
            kw.get("api_key"),
            kw["client_id"],
        )

        async def admit(session_id: str, turn: int) -> None:
            req = RealtimeTurnRequested(
                **self._common(
                    {
                        "request_id": f"{session_id}/{turn}",
                        "tenant_id": tenant_id,
                        "user_id": user_id,
                        "api_key": api_key,
                        "client_id": client_id,
                    }
                ),
                model=model,
                session_id=session_id,
                turn=turn,
            )
            await self.result(req, self.timeout_s)

        return self._realtime.session(model, admit=admit, **kw)

    # --- requests ------------------------------------------------------------------------

    def build_request(
        self, model: str, messages: list[dict[str, Any]], *, stream: bool, **kw: Any
    ) -> ChatRequested:
        """Known sampling fields become ``params``; any other keyword goes to ``params.extra``
        and reaches providers unchanged."""
        params = {k: kw.pop(k) for k in list(kw) if k in _PARAMS}
        fields = {
            k: kw.pop(k)
            for k in (
                "fallbacks",
                "metadata",
                "request_id",
                "client_id",
                "user_id",
                "tenant_id",
                "api_key",
                "max_attempts",
            )
            if k in kw
        }
        timeouts = Timeouts(ttft_ms=kw.pop("ttft_ms", None), total_ms=kw.pop("total_ms", None))
        params["extra"] = kw.pop("extra", {}) | kw
        # validated as a whole, so an error names where it is (``messages[0].role``)
        return ChatRequested.model_validate(
            {
                "request_id": fields.pop("request_id", None) or new_id(),
                "tenant_id": fields.pop("tenant_id", None) or self.tenant_id,
                "user_id": fields.pop("user_id", self.user_id),
                "client_id": fields.pop("client_id", self.client_id),
                "model": model,
                "messages": messages,
                "params": ChatParams.model_validate(params),
                "stream": stream,
                "timeouts": timeouts,
                "reply_to": self.reply_to,
                **fields,
            }
        )

    def _common(self, kw: dict[str, Any]) -> dict[str, Any]:
        """The envelope and routing fields of any request, taken out of ``kw``."""
        fields = {k: kw.pop(k) for k in _COMMON if k in kw}
        return {
            "request_id": fields.pop("request_id", None) or new_id(),
            "tenant_id": fields.pop("tenant_id", None) or self.tenant_id,
            "user_id": fields.pop("user_id", self.user_id),
            "client_id": fields.pop("client_id", self.client_id),
            "timeouts": Timeouts(ttft_ms=kw.pop("ttft_ms", None), total_ms=kw.pop("total_ms", None)),
            "reply_to": self.reply_to,
            **fields,
        }

    def build_embed(
        self,
        model: str,
        input: str | list[str],
        *,
        dimensions: int | None = None,
        encoding_format: EncodingFormat = "float",
        **kw: Any,
    ) -> EmbedRequested:
        """Keywords the SDK does not model go to ``extra`` and reach providers unchanged."""
        common = self._common(kw)
        fallbacks = kw.pop("fallbacks", [])
        return EmbedRequested(
            **common,
            model=model,
            input=[input] if isinstance(input, str) else input,
            dimensions=dimensions,
            encoding_format=encoding_format,
            fallbacks=fallbacks,
            extra=kw.pop("extra", {}) | kw,
        )

    async def embed(
        self,
        model: str,
        input: str | list[str],
        dimensions: int | None = None,
        encoding_format: EncodingFormat = "float",
        **kw: Any,
    ) -> ResultProduced:
        """Embeddings of ``input`` (one text or many): ``result.output.data[i].embedding`` is the
        vector of ``input[i]`` (floats, or base64 with ``encoding_format="base64"``)."""
        timeout = kw.pop("timeout_s", self.timeout_s)
        req = self.build_embed(model, input, dimensions=dimensions, encoding_format=encoding_format, **kw)
        return await self.result(req, timeout)

    async def list_models(self, capability: str | None = None, **kw: Any) -> list[ModelInfo]:
        """The models this client's tenant may use, sorted by alias, with capabilities, limits,
        per-unit prices and whether each deployment is usable now (the router's view).

        Filters: ``capability`` (``"embeddings"``, ``"tools"``, ...), ``operation`` (``"embed"``),
        ``provider`` (a provider name or kind), ``model`` (one alias: ``ModelNotFound`` when the
        tenant cannot see it). Other keywords: ``timeout_s`` and the request envelope's."""
        timeout = kw.pop("timeout_s", self.timeout_s)
        filters = {k: kw.pop(k) for k in ("operation", "provider", "model") if k in kw}
        common = self._common(kw)
        if kw:
            raise TypeError(f"list_models() got unexpected keyword arguments: {', '.join(sorted(kw))}")
        req = ModelsListRequested(**common, filter=ModelFilter(capability=capability, **filters))
        result = await self.result(req, timeout)
        assert result.output is not None and result.output.kind == "models"
        return result.output.models

    async def send(self, req: RequestBase) -> asyncio.Queue[Any]:
        """Publish a request; its chunks and result arrive on the returned queue."""
        q: asyncio.Queue[Any] = asyncio.Queue()
        self._waiting[req.request_id] = q
        self._requests[req.request_id] = req
        with telemetry.producing(f"{self.topics.requests.name} publish"):
            fut = await self._publisher.publish(self.topics.requests.name, req, key=req.tenant_id)
        await fut
        return q

    def _forget(self, request_id: str) -> None:
        self._waiting.pop(request_id, None)
        self._requests.pop(request_id, None)

    async def chat(self, model: str, messages: list[dict[str, Any]], **kw: Any) -> ResultProduced:
        """One answer. Raises the gateway error (with its wire ``code``) or ``GatewayTimeout``."""
        timeout = kw.pop("timeout_s", self.timeout_s)
        req = self.build_request(model, messages, stream=False, **kw)
        return await self.result(req, timeout)

    async def result(self, req: RequestBase, timeout: float) -> ResultProduced:
        """The request's result. Past ``timeout``, or when the calling task is cancelled (the
        caller gave up), a cancel event stops the provider call."""
        reason: str | None = "client_cancelled"
        try:
            async with asyncio.timeout(timeout):
                q = await self.send(req)
                while True:
                    event = await q.get()
                    if isinstance(event, ResultProduced):
                        reason = None
                        return raise_for(event)
        except TimeoutError:
            reason = "timeout"
            raise GatewayTimeout(f"no answer to request {req.request_id} within {timeout:g}s") from None
        except Exception:  # the request could not be sent: there is nothing to stop
            reason = None
            raise
        finally:
            if reason is not None:  # no answer will be read: stop the provider call
                await self._stop(req.request_id, reason)
            self._forget(req.request_id)

    async def stream_chat(
        self, model: str, messages: list[dict[str, Any]], **kw: Any
    ) -> AsyncIterator[ChunkEmitted]:
        """Chunks in ``seq`` order; the last has ``final`` with finish reason and usage."""
        timeout = kw.pop("timeout_s", self.timeout_s)
        req = self.build_request(model, messages, stream=True, **kw)
        async for chunk in self.stream(req, timeout):
            yield chunk

    async def stream(
        self, req: ChatRequested | SpeechRequested, timeout: float
    ) -> AsyncGenerator[ChunkEmitted, None]:
        """Chunks in ``seq`` order, each once (``streams.StreamCheck``: duplicates dropped, a
        restart of the plan replayed against what was delivered; a gap, or a restart whose answer
        differs, raises ``StreamInterrupted``). A stream that fails after it began (the final chunk
        carries ``error``, finish reason ``error``) yields that chunk, then raises its error."""
        finished = False
        check = StreamCheck(req.request_id)
        try:
            async with asyncio.timeout(timeout):
                q = await self.send(req)
                while True:
                    event = await q.get()
                    if isinstance(event, ChunkEmitted):
                        chunk = check.accept(event)
                        if chunk is None:
                            continue
                        if chunk.final:
                            finished = True
                        yield chunk
                        if chunk.final:
                            if chunk.error is not None:
                                raise error_from(chunk.error, req.request_id)
                            return
                    elif isinstance(event, ResultProduced):
                        finished = True
                        raise_for(event)
                        return
        except TimeoutError:
            raise GatewayTimeout(f"stream {req.request_id} did not finish within {timeout:g}s") from None
        finally:
            if not finished:  # the caller stopped reading or timed out: stop the provider call
                await self._stop(req.request_id, "client_cancelled")
            self._forget(req.request_id)

    async def _stop(self, request_id: str, reason: str) -> None:
        """``cancel`` on the way out of a call: not interrupted by the caller's own cancellation,
        and a failure to publish does not replace the error already on its way."""
        with contextlib.suppress(Exception):
            await asyncio.shield(self.cancel(request_id, reason))

    async def cancel(self, request_id: str, reason: str = "client_cancelled") -> None:
        """Ask the executors to stop a request; the event names the request's own tenant and user."""
        req = self._requests.get(request_id)
        event = CancelRequested(
            request_id=request_id,
            tenant_id=req.tenant_id if req else self.tenant_id,
            user_id=req.user_id if req else self.user_id,
            reason=reason,
        )
        fut = await self._publisher.publish(self.topics.control.name, event, key=request_id)
        await fut

"""The edge's way into the event pipeline: the Python SDK (``GatewayClient``), serving many tenants.

Each worker process owns one client and so one reply partition of ``llm.replies``:
every request names it in ``reply_to``, and only this process reads it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import zlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from services.client import GatewayClient
from services.client.realtime import RealtimeSession
from services.contracts.events import (
    AuditRecorded,
    BatchUpdated,
    ChatRequested,
    ChunkEmitted,
    EmbedRequested,
    EncodingFormat,
    ImageGenerateRequested,
    JobUpdated,
    MediaSource,
    ModelInfo,
    RequestBase,
    ResultProduced,
    SpeechRequested,
    TranscribeRequested,
    VideoGenerateRequested,
)
from services.runtime.settings import Settings
from services.runtime.topics import Topics

from .auth import Caller
from .batch_ops import BatchOperations


class Pipeline(Protocol):
    """What the edge needs from the pipeline (tests pass a fake)."""

    def request(
        self, caller: Caller, model: str, messages: list[dict[str, Any]], *, stream: bool, **kw: Any
    ) -> ChatRequested: ...

    def embed_request(
        self,
        caller: Caller,
        model: str,
        input: str | list[str],
        *,
        dimensions: int | None = None,
        encoding_format: EncodingFormat = "float",
        **kw: Any,
    ) -> EmbedRequested: ...

    def image_request(self, caller: Caller, model: str, prompt: str, **kw: Any) -> ImageGenerateRequested: ...

    def speech_request(
        self, caller: Caller, model: str, input: str, voice: str, *, stream: bool = False, **kw: Any
    ) -> SpeechRequested: ...

    def transcribe_request(
        self, caller: Caller, model: str, file: MediaSource, **kw: Any
    ) -> TranscribeRequested: ...

    async def result(self, req: RequestBase, timeout: float) -> ResultProduced: ...

    def stream(self, req: ChatRequested | SpeechRequested, timeout: float) -> AsyncIterator[ChunkEmitted]: ...

    async def cancel(self, request_id: str, reason: str = "client_cancelled") -> None: ...

    async def submit(self, req: RequestBase) -> str: ...

    def video_request(self, caller: Caller, model: str, prompt: str, **kw: Any) -> VideoGenerateRequested: ...

    async def job(self, tenant_id: str, job_id: str) -> JobUpdated: ...

    async def cancel_job_of(self, tenant_id: str, job_id: str) -> JobUpdated: ...

    async def models(self, caller: Caller, model: str | None, timeout: float) -> list[ModelInfo]:
        """The caller's tenant's models (``model``: that alias only, else ``ModelNotFound``),
        answered by the router to a ``models.list`` request."""
        ...

    def realtime(self, model: str, **kw: Any) -> AbstractAsyncContextManager[RealtimeSession]:
        """A Realtime session for the caller named in ``kw`` (``GatewayClient.realtime``)."""
        ...

    # batches (``batch_ops.BatchOperations``)
    async def publish_batch(self, batch: BatchUpdated) -> BatchUpdated: ...

    async def delete_batch(self, batch: BatchUpdated) -> None: ...

    async def batch(self, tenant_id: str, batch_id: str) -> BatchUpdated: ...

    async def tenant_batches(self, tenant_id: str) -> list[BatchUpdated]: ...

    async def batch_jobs(self, batch: BatchUpdated) -> list[JobUpdated | None]: ...

    async def aclose(self) -> None: ...


def reply_partition(partitions: int) -> int:
    """This process's reply partition: distinct for the workers of one host (consecutive pids),
    spread across hosts (containers all have small pids), stable for the process's lifetime."""
    return (zlib.crc32(socket.gethostname().encode()) + os.getpid()) % partitions


class EdgeClient(GatewayClient, BatchOperations):
    """``GatewayClient`` whose events carry the calling tenant and user, not the client's own.

    ``request`` builds the request event for a caller (tenant only from the API key); the
    SDK's cancel already carries the request's own tenant and user. Batch records are written
    and read with ``BatchOperations``.
    """

    def __init__(self, settings: Settings):
        topics = Topics.load(settings.topics_path, settings.topic_prefix)
        super().__init__(
            settings.bootstrap_servers,
            tenant_id="edge",
            user_id=None,
            timeout_s=600.0,
            topics_path=settings.topics_path,
            topic_prefix=settings.topic_prefix,
            reply_partition=reply_partition(topics.replies.partitions),
        )

    async def aclose(self) -> None:
        await self.close_batches()
        await super().aclose()

    def request(
        self, caller: Caller, model: str, messages: list[dict[str, Any]], *, stream: bool, **kw: Any
    ) -> ChatRequested:
        return self.build_request(
            model, messages, stream=stream, tenant_id=caller.tenant_id, user_id=caller.user_id, **kw
        )

    def embed_request(
        self,
        caller: Caller,
        model: str,
        input: str | list[str],
        *,
        dimensions: int | None = None,
        encoding_format: EncodingFormat = "float",
        **kw: Any,
    ) -> EmbedRequested:
        return self.build_embed(
            model,
            input,
            dimensions=dimensions,
            encoding_format=encoding_format,
            tenant_id=caller.tenant_id,
            user_id=caller.user_id,
            **kw,
        )

    def image_request(self, caller: Caller, model: str, prompt: str, **kw: Any) -> ImageGenerateRequested:
        return self.build_image(model, prompt, tenant_id=caller.tenant_id, user_id=caller.user_id, **kw)

    def video_request(self, caller: Caller, model: str, prompt: str, **kw: Any) -> VideoGenerateRequested:
        return self.build_video(model, prompt, tenant_id=caller.tenant_id, user_id=caller.user_id, **kw)

    def speech_request(
        self, caller: Caller, model: str, input: str, voice: str, *, stream: bool = False, **kw: Any
    ) -> SpeechRequested:
        return self.build_speech(
            model, input, voice, stream=stream, tenant_id=caller.tenant_id, user_id=caller.user_id, **kw
        )

    def transcribe_request(
        self, caller: Caller, model: str, file: MediaSource, **kw: Any
    ) -> TranscribeRequested:
        return self.build_transcribe(model, file, tenant_id=caller.tenant_id, user_id=caller.user_id, **kw)

    async def audit(self, event: AuditRecorded) -> asyncio.Future[object]:
        """Publish one audit record (``llm.audit``, key tenant); the future is its ack."""
        return await self._publisher.publish(self.topics.audit.name, event, key=event.tenant_id)

    async def models(self, caller: Caller, model: str | None, timeout: float) -> list[ModelInfo]:
        return await self.list_models(
            tenant_id=caller.tenant_id,
            user_id=caller.user_id,
            timeout_s=timeout,
            **({"model": model} if model is not None else {}),
        )

"""Embeddings micro-batching (S3.2): requests that may share a provider call share one.

Requests with the same ``BatchKey`` (tenant, deployment, ``dimensions``, ``encoding_format``,
``extra``) that arrive within ``window_ms`` of the first one go to the provider as one call of
at most the deployment's ``max_batch_inputs`` inputs. A batch is sent when its window ends or
as soon as it is full; a request larger than the room left is split, its inputs filling this
batch and the next ones (so a request over the limit is split across calls even with no
other traffic). ``window_ms == 0`` merges nothing: each request is sent at once (still split
at the limit).

Splitting the answer back: each request gets its own vectors, in its own input order, and a
share of the call's tokens; the shares of one call add up exactly to what the provider
reported (``apportion``: proportional to the requests' estimated sizes, the remainder by
largest fraction). ``units["inputs"]`` is each request's own count.

When the provider refuses a call that carries several requests with a verdict on the request
itself (a non-retryable 4xx, e.g. one input it will not embed, or more inputs than it takes),
each request's part is sent again alone, concurrently, so every request gets its own vectors
or its own error. Any other failure (5xx, timeout, lost connection) is every request's
failure, for the caller's retries and fallbacks to handle.

Never across tenants: the tenant is part of the key. A request that is cancelled while its
batch is still open leaves it; a call whose requests have all been cancelled is abandoned.
Nothing here survives the process; a batch lives a few milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson

from services.contracts.errors import GatewayError, ProviderError
from services.contracts.events import EmbedRequested, Usage

from .providers._embeddings import Embeddings, Vector
from .targets import Target

#: Sends one provider call: ``req`` carries the batch's inputs and the requests' common parameters.
BatchCall = Callable[[EmbedRequested, Target], Awaitable[Embeddings]]
#: ``call_later(delay_s, callback) -> handle with cancel()`` (the event loop's, or a test's).
Later = Callable[[float, Callable[[], None]], Any]


@dataclass(frozen=True, slots=True)
class BatchKey:
    """What requests must share to share a call."""

    tenant_id: str
    deployment: tuple[str, str, str]  # alias, provider, upstream model
    dimensions: int | None
    encoding_format: str
    extra: bytes  # canonical JSON of ``extra``

    @classmethod
    def of(cls, req: EmbedRequested, target: Target) -> BatchKey:
        extra = orjson.dumps(req.extra, option=orjson.OPT_SORT_KEYS) if req.extra else b""
        deployment = (target.alias, target.provider, target.upstream_model)
        return cls(req.tenant_id, deployment, req.dimensions, req.encoding_format, extra)


@dataclass
class Share:
    """One request's part of the calls it rode in: its vectors (in its input order), its
    usage share, the provider's model name, the wall time of its provider calls (first start
    to last end) and how many calls carried its inputs."""

    vectors: list[Vector]
    usage: Usage
    model: str
    provider_ms: float
    calls: int


def size_estimate(text: str) -> int:
    """A request's weight in a call's token count: about four UTF-8 bytes per token, at least one."""
    return len(text.encode()) // 4 + 1


def apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Split the integer ``total`` in proportion to ``weights``; the parts add up to ``total``
    exactly (largest remainder; ties go to the earlier weight). All-zero weights split evenly."""
    if not weights:
        return []
    w = [max(x, 0) for x in weights]
    whole = sum(w)
    if whole == 0:
        w, whole = [1] * len(w), len(w)
    parts = [total * x // whole for x in w]
    left = total - sum(parts)
    for i in sorted(range(len(w)), key=lambda i: (-(total * w[i] % whole), i))[:left]:
        parts[i] += 1
    return parts


def isolates(err: BaseException) -> bool:
    """Whether a refused batch is retried one request at a time: the provider judged the
    request itself (a 4xx other than 408/429), which one request's inputs may have caused."""
    if not isinstance(err, ProviderError) or err.retryable:
        return False
    status = err.details.get("upstream_status")
    return isinstance(status, int) and 400 <= status < 500


def _copy(err: BaseException) -> BaseException:
    """A failure of a shared call, as one request's own exception (each caller raises its own)."""
    if isinstance(err, GatewayError):
        return type(err)(err.message, param=err.param, details=dict(err.details))
    return err


class _Job:
    """One request: its inputs, answered piece by piece; ``future`` gets the ``Share``."""

    __slots__ = (
        "req",
        "weights",
        "future",
        "pieces",
        "vectors",
        "prompt",
        "total",
        "model",
        "left",
        "first",
        "last",
        "calls",
    )

    def __init__(self, req: EmbedRequested):
        self.req = req
        self.weights = [size_estimate(t) for t in req.input]
        self.future: asyncio.Future[Share] = asyncio.get_running_loop().create_future()
        self.pieces: list[_Piece] = []
        self.vectors: list[Vector | None] = [None] * len(req.input)
        self.prompt = self.total = self.calls = 0
        self.model = ""
        self.left = 0
        self.first = self.last = 0.0

    def fill(
        self, piece: _Piece, vectors: list[Vector], prompt: int, total: int, model: str, t0: float, t1: float
    ) -> None:
        if self.future.done():
            return
        self.vectors[piece.start : piece.stop] = vectors
        self.prompt += prompt
        self.total += total
        self.model = self.model or model
        self.first = t0 if not self.calls else min(self.first, t0)
        self.last = max(self.last, t1)
        self.calls += 1
        self.left -= 1
        if self.left == 0:
            usage = Usage(
                prompt_tokens=self.prompt, total_tokens=self.total, units={"inputs": len(self.vectors)}
            )
            vectors = cast(list[Vector], self.vectors)  # every piece has answered: no None left
            self.future.set_result(
                Share(vectors, usage, self.model, (self.last - self.first) * 1000, self.calls)
            )


class _Piece:
    """The inputs ``[start, stop)`` of one job, in one batch."""

    __slots__ = ("job", "start", "stop", "batch")

    def __init__(self, job: _Job, start: int, stop: int, batch: _Batch):
        self.job, self.start, self.stop, self.batch = job, start, stop, batch

    @property
    def inputs(self) -> list[str]:
        return self.job.req.input[self.start : self.stop]

    @property
    def weight(self) -> int:
        return sum(self.job.weights[self.start : self.stop])


class _Batch:
    __slots__ = ("key", "target", "pieces", "size", "timer", "task")

    def __init__(self, key: BatchKey, target: Target):
        self.key = key
        self.target = target
        self.pieces: list[_Piece] = []
        self.size = 0
        self.timer: Any = None
        self.task: asyncio.Task[None] | None = None


class EmbedBatcher:
    """Merges concurrent embeddings requests into provider calls (see the module docstring).

    ``embed(req, target)`` answers one request with its ``Share`` or raises its error;
    ``submit`` is the same without waiting (the job's ``future`` answers)."""

    def __init__(self, call: BatchCall, window_ms: float, *, later: Later | None = None):
        self._call = call
        self.window_s = max(window_ms, 0.0) / 1000
        self._later = later
        self._open: dict[BatchKey, _Batch] = {}
        self._flying: set[_Batch] = set()

    @property
    def open_batches(self) -> int:
        return len(self._open)

    def submit(self, req: EmbedRequested, target: Target) -> _Job:
        key = BatchKey.of(req, target)
        job = _Job(req)
        limit = target.max_batch_inputs
        n, start = len(req.input), 0
        while start < n:
            batch = self._open.get(key) or self._new_batch(key, target)
            stop = min(start + limit - batch.size, n)
            piece = _Piece(job, start, stop, batch)
            batch.pieces.append(piece)
            batch.size += stop - start
            job.pieces.append(piece)
            job.left += 1
            start = stop
            if batch.size >= limit or not self.window_s:
                self._flush(batch)
        return job

    async def embed(self, req: EmbedRequested, target: Target) -> Share:
        job = self.submit(req, target)
        try:
            return await job.future
        except asyncio.CancelledError:
            self._withdraw(job)
            raise

    async def aclose(self) -> None:
        """Drop open batches and abandon calls in flight (the process is stopping: the plans
        run again elsewhere)."""
        for batch in list(self._open.values()):
            if batch.timer is not None:
                batch.timer.cancel()
        self._open.clear()
        tasks = [b.task for b in self._flying if b.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- batches ---------------------------------------------------------------------------

    def _new_batch(self, key: BatchKey, target: Target) -> _Batch:
        batch = self._open[key] = _Batch(key, target)
        if self.window_s:
            later = self._later or asyncio.get_running_loop().call_later
            batch.timer = later(self.window_s, lambda: self._window_over(batch))
        return batch

    def _window_over(self, batch: _Batch) -> None:
        if self._open.get(batch.key) is batch:
            self._flush(batch)

    def _flush(self, batch: _Batch) -> None:
        if self._open.get(batch.key) is batch:
            del self._open[batch.key]
        if batch.timer is not None:
            batch.timer.cancel()
        self._flying.add(batch)
        batch.task = asyncio.create_task(self._send(batch))
        batch.task.add_done_callback(lambda _: self._flying.discard(batch))

    def _withdraw(self, job: _Job, sending: _Batch | None = None) -> None:
        """``job`` no longer waits: its pieces leave open batches; a call in flight that no
        live request waits for any more is abandoned (except ``sending``, the batch whose
        call is answering it)."""
        for piece in job.pieces:
            batch = piece.batch
            if batch is sending:
                continue
            if batch.task is None:
                batch.pieces.remove(piece)
                batch.size -= piece.stop - piece.start
                if not batch.pieces:
                    if batch.timer is not None:
                        batch.timer.cancel()
                    if self._open.get(batch.key) is batch:
                        del self._open[batch.key]
            elif all(p.job.future.done() for p in batch.pieces):
                batch.task.cancel()

    def _fail(self, job: _Job, err: BaseException, sending: _Batch) -> None:
        if not job.future.done():
            job.future.set_exception(_copy(err))
            self._withdraw(job, sending)

    # --- calls -----------------------------------------------------------------------------

    async def _send(self, batch: _Batch) -> None:
        pieces = batch.pieces
        if len(pieces) == 1:
            await self._one_call(pieces)
            return
        try:
            await self._one_call(pieces, fail=False)
        except Exception as err:
            if not isolates(err):
                for p in pieces:
                    self._fail(p.job, err, batch)
                return
            live = [p for p in pieces if not p.job.future.done()]
            await asyncio.gather(*(self._one_call([p]) for p in live))

    async def _one_call(self, pieces: list[_Piece], *, fail: bool = True) -> None:
        """One provider call for ``pieces``; its answer is split among them. With ``fail`` a
        failure is the pieces' failure, else it is raised."""
        head = pieces[0]
        first = head.job.req
        if len(pieces) == 1 and head.start == 0 and head.stop == len(first.input):
            inputs, req = first.input, first  # one whole request: sent as it is
        else:
            inputs = [text for p in pieces for text in p.inputs]
            req = first.model_copy(update={"input": inputs})
        t0 = time.perf_counter()
        try:
            done = await self._call(req, pieces[0].batch.target)
            if len(done.vectors) != len(inputs):
                raise ProviderError(
                    f"provider answered {len(done.vectors)} vectors for {len(inputs)} inputs",
                    details={"upstream_status": None},
                )
        except Exception as err:
            if not fail:
                raise
            for p in pieces:
                self._fail(p.job, err, p.batch)
            return
        t1 = time.perf_counter()
        weights = [p.weight for p in pieces]
        prompts = apportion(done.usage.prompt_tokens, weights)
        totals = apportion(done.usage.total_tokens, weights)
        offset = 0
        for p, prompt, total in zip(pieces, prompts, totals, strict=True):
            n = p.stop - p.start
            p.job.fill(p, done.vectors[offset : offset + n], prompt, total, done.model, t0, t1)
            offset += n

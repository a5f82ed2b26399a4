"""One provider call of a chat plan (whole or streamed), the request's total deadline, and the
event fields the outcome publisher builds from what happened.

``complete_once`` / ``stream_once`` return an ``Outcome`` or raise ``GatewayError``; attempts,
retries and fallback are ``attempts.py``'s, publishing the result, usage and audit events is
``outcome.py``'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from services.contracts.errors import Cancelled, GatewayError, InternalError, ProviderTimeout
from services.contracts.events import (
    AssistantMessage,
    ChunkEmitted,
    ErrorInfo,
    ExecutionPlanned,
    FailedAttempt,
    Output,
    RequestBase,
    ToolCall,
    ToolCallDelta,
    ToolCallFunction,
    Usage,
    UsageRecorded,
    new_id,
)
from services.runtime.pricing import cost_usd

from .attempts import Until
from .chunker import ChunkEmitter
from .providers.registry import adapter_for
from .providers.transport import HttpTransport
from .structured import CHECKED_FINISH, OutputContract
from .targets import Target
from .watch import Watched

log = logging.getLogger(__name__)
T = TypeVar("T")
SecretLookup = Callable[[str | None], str | None]
#: The tenant's post-response hooks on a whole answer (``hooks.check_answer``), updating it in place.
CheckAnswer = Callable[["Outcome"], Awaitable[None]]


@dataclass
class Outcome:
    """A provider answered: a chat ``message`` (with ``finish_reason``) or another operation's
    ``output``. ``error`` is set when the answer itself is refused (structured output that
    breaks its schema, a post-response hook's block): the call happened and its usage is
    billed, but the caller gets the error, not the answer."""

    usage: Usage
    deployment: Target
    model: str
    provider_ms: float
    ttft_ms: float | None = None
    message: AssistantMessage | None = None
    finish_reason: str | None = None
    output: Output | None = None
    chunks: int = 0
    error: GatewayError | None = None


async def settle(
    run: asyncio.Task[T], request_id: str, deadline: float | None, total_ms: int | None
) -> tuple[T | None, GatewayError | None]:
    """Await a request's run until its total ``deadline`` (event-loop time): ``(outcome, None)``
    or ``(None, error)``. A cancel of the run (the caller's) is ``Cancelled``, the deadline
    ``ProviderTimeout``, a ``GatewayError`` itself, anything else (an adapter bug)
    ``InternalError``. When the awaiting task is itself being cancelled (this process is
    stopping), the cancellation goes on: the plan runs again elsewhere."""
    try:
        async with asyncio.timeout_at(deadline):
            return await run, None
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        return None, Cancelled(f"request {request_id} was cancelled")
    except TimeoutError:
        return None, ProviderTimeout(f"request exceeded total_ms={total_ms}")
    except GatewayError as err:
        return None, err
    except Exception as exc:  # an adapter bug must still answer the caller
        log.exception("execution of %s failed", request_id)
        return None, InternalError(f"executor failed: {type(exc).__name__}: {exc}")


def _checked(contract: OutputContract | None, message: AssistantMessage, finish: str) -> GatewayError | None:
    """The contract's verdict on a text answer (tool-call answers have no text to check)."""
    if contract is None or finish not in CHECKED_FINISH or message.tool_calls:
        return None
    return contract.violation(message.content, finish)


class QuietCall:
    """The ``attempts.Call`` parts of a plan whose calls publish nothing while they run."""

    @property
    def acks(self) -> list[asyncio.Future[object]]:
        return []

    def prepare(self) -> None:
        pass

    def close(self) -> None:
        pass


async def whole_call(
    plan: ExecutionPlanned,
    dep: Target,
    http: HttpTransport,
    call: Callable[[HttpTransport], Awaitable[T]],
    until: Until,
) -> tuple[T, float]:
    """``call`` through a ``Watched`` view of ``http``, under the plan's deadlines: its response
    head within ``plan.ttft_ms``, its answer by ``until``; ``(its answer, milliseconds it took)``.
    A refusal carries the wait its response asked for (``details["retry_after_ms"]``)."""
    t0 = time.perf_counter()
    watch = Watched(http)
    head_by = after(plan.ttft_ms)
    clock = asyncio.timeout_at(earliest(head_by, until.at))
    watch.on_head = lambda: clock.reschedule(until.at)
    try:
        async with clock:
            done = await call(watch)
    except TimeoutError:
        if not clock.expired():
            raise
        if watch.head_at is None and head_by is not None and (until.at is None or head_by <= until.at):
            raise ProviderTimeout(
                f"{dep.provider}: no response head within ttft_ms={plan.ttft_ms}",
                details={"upstream_status": None},
            ) from None
        raise until.timed_out(dep, plan.total_ms) from None
    except GatewayError as err:
        watch.annotate(err)
        raise
    return done, (time.perf_counter() - t0) * 1000


async def complete_once(
    plan: ExecutionPlanned,
    dep: Target,
    http: HttpTransport,
    key: str | None,
    until: Until,
    contract: OutputContract | None = None,
) -> Outcome:
    """One whole answer from ``dep``, checked against the request's output ``contract``. Its
    response head must arrive within ``plan.ttft_ms`` and the answer by ``until``; a refusal
    carries the wait its response asked for (``details["retry_after_ms"]``)."""
    adapter = adapter_for(dep.kind, "chat")
    done, ms = await whole_call(
        plan, dep, http, lambda watch: adapter.complete(watch, plan.request, dep, key), until
    )
    return Outcome(
        done.usage,
        dep,
        done.model or dep.upstream_model,
        provider_ms=ms,
        ttft_ms=ms,
        message=done.message,
        finish_reason=done.finish_reason,
        error=_checked(contract, done.message, done.finish_reason),
    )


async def stream_once(
    plan: ExecutionPlanned,
    dep: Target,
    http: HttpTransport,
    key: str | None,
    emitter: ChunkEmitter,
    until: Until,
    contract: OutputContract | None = None,
) -> Outcome:
    """The first token must arrive within ``plan.ttft_ms`` and the stream end by ``until``. The
    assembled answer is checked against ``contract`` before the terminal chunk, which then
    carries the error (``finish_reason: error``) instead of the provider's finish. When the
    emitter's guard blocks the answer, reading stops at once and the outcome carries that error."""
    t0 = time.perf_counter()
    ttft: float | None = None
    text: list[str] = []
    tools: dict[int, ToolCallDelta] = {}
    finish, usage, model = "stop", None, None
    emitter.set_source(dep.provider, dep.upstream_model)
    watch = Watched(http)
    stream = adapter_for(dep.kind, "chat").stream(watch, plan.request, dep, key)
    first_by = after(plan.ttft_ms)
    clock = asyncio.timeout_at(earliest(first_by, until.at))
    try:
        async with clock:
            while True:
                try:
                    delta = await anext(stream)
                except StopAsyncIteration:
                    break
                if ttft is None and (delta.content or delta.tool_calls):
                    ttft = (time.perf_counter() - t0) * 1000
                    emitter.first_token(ttft)
                    clock.reschedule(until.at)
                if delta.content:
                    text.append(delta.content)
                for tc in delta.tool_calls or ():
                    cur = tools.setdefault(tc.index, ToolCallDelta(index=tc.index))
                    cur.id, cur.name = cur.id or tc.id, cur.name or tc.name
                    cur.arguments += tc.arguments
                finish = delta.finish_reason or finish
                usage = delta.usage or usage
                model = delta.model or model
                await emitter.add(delta.content, delta.tool_calls)
                if emitter.blocked is not None:
                    break  # the caller's stream has ended: stop the provider's
    except TimeoutError:
        if not clock.expired():
            raise
        if ttft is None and first_by is not None and (until.at is None or first_by <= until.at):
            raise ProviderTimeout(
                f"{dep.provider}: no token within ttft_ms={plan.ttft_ms}", details={"upstream_status": None}
            ) from None
        raise until.timed_out(dep, plan.total_ms) from None
    except GatewayError as err:
        watch.annotate(err)
        raise
    finally:
        emitter.cancel_timer()
        await stream.aclose()
    usage = usage or Usage()
    message = AssistantMessage(
        content="".join(text) if text or not tools else None,
        tool_calls=[
            ToolCall(
                id=t.id or f"call_{i}", function=ToolCallFunction(name=t.name or "", arguments=t.arguments)
            )
            for i, t in sorted(tools.items())
        ]
        or None,
    )
    error = emitter.blocked or _checked(contract, message, finish)
    if error is None:
        await emitter.finish(finish, usage)  # the guard sees the end, and may still block
        error = emitter.blocked
        if emitter.guarded:  # the answer is what the hooks let through
            message.content = emitter.shown if emitter.shown or not tools else None
    elif not emitter.closed:
        await emitter.finish("error", usage, error=error_info(error))
    return Outcome(
        usage,
        dep,
        model or dep.upstream_model,
        provider_ms=(time.perf_counter() - t0) * 1000,
        ttft_ms=ttft,
        message=message,
        finish_reason=finish,
        chunks=emitter.seq,
        error=error,
    )


def after(ms: int | None) -> float | None:
    """Event-loop time ``ms`` from now (None: never)."""
    return asyncio.get_running_loop().time() + ms / 1000 if ms else None


def earliest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def error_info(err: GatewayError) -> ErrorInfo:
    """An error as events carry it (``ErrorInfo.of``)."""
    return ErrorInfo.of(err)


def usage_record(
    req: RequestBase,
    dep: Target,
    model: str | None,
    usage: Usage | None,
    error: GatewayError | None,
    total_ms: float,
    *,
    ttft_ms: float | None = None,
    fallback_used: bool = False,
    failures: list[FailedAttempt] | None = None,
    attempts: int = 0,
) -> UsageRecorded:
    """The ``llm.usage`` event of one executed request (any operation): what ``dep`` reported,
    priced by the catalog; status ``ok``, ``cancelled`` or ``error``."""
    status: Literal["ok", "error", "cancelled"] = (
        "ok" if error is None else ("cancelled" if isinstance(error, Cancelled) else "error")
    )
    return UsageRecorded(
        request_id=req.request_id,
        tenant_id=req.tenant_id,
        user_id=req.user_id,
        operation=req.operation,
        status=status,
        alias=dep.alias,
        provider=dep.provider,
        model=model,
        conversation_id=req.metadata.get("conversation_id"),
        client_id=req.client_id,
        api_key=req.api_key,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        cached_tokens=usage.cached_tokens if usage else 0,
        total_tokens=usage.total_tokens if usage else 0,
        cost_usd=cost_usd(usage, dep, batch=req.batch is not None) if usage else 0.0,
        ttft_ms=ttft_ms,
        total_ms=total_ms,
        error_code=error.code if error else None,
        streamed=req.stream,
        fallback_used=fallback_used,
        units=usage.units if usage else {},
        failed_attempts=failures or None,
        attempts=attempts,
        batch_id=req.batch.batch_id if req.batch else None,
        custom_id=req.batch.custom_id if req.batch else None,
    )


def chunk_template(plan: ExecutionPlanned) -> ChunkEmitted:
    """The chunk events' common fields (``seq`` and the rest are set per chunk). ``run_id`` is new
    for every run of the plan: a plan run again after its executor failed mid-stream starts its
    chunks again from ``seq`` 0 under another ``run_id``, which is how its readers know."""
    req = plan.request
    return ChunkEmitted(
        request_id=req.request_id, tenant_id=req.tenant_id, user_id=req.user_id, seq=0, run_id=new_id()
    )

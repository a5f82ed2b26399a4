"""Running one execution plan: attempts, retries, fallback, timeouts, streaming.

``execute`` returns an ``Outcome`` (or raises ``GatewayError``); publishing the
result, usage and audit events is the app's job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from services.contracts.errors import Cancelled, GatewayError, InternalError, ProviderError, ProviderTimeout
from services.contracts.events import (
    AssistantMessage,
    ChunkEmitted,
    ErrorInfo,
    ExecutionPlanned,
    FailedAttempt,
    RequestBase,
    ToolCall,
    ToolCallDelta,
    ToolCallFunction,
    Usage,
    UsageRecorded,
)
from services.runtime.pricing import cost_usd

from .chunker import ChunkEmitter
from .providers.registry import adapter_for
from .providers.transport import HttpTransport
from .structured import CHECKED_FINISH, OutputContract, contract_for
from .targets import Target

log = logging.getLogger(__name__)
T = TypeVar("T")
SecretLookup = Callable[[str | None], str | None]
OnFallback = Callable[[Target, Target, GatewayError], Awaitable[None]]
#: The tenant's post-response hooks on a whole answer (``hooks.check_answer``), updating it in place.
CheckAnswer = Callable[["Outcome"], Awaitable[None]]


@dataclass
class Outcome:
    """A provider answered. ``error`` is set when the answer itself is refused (structured
    output that breaks its schema): the call happened and its usage is billed, but the
    caller gets the error, not the message."""

    message: AssistantMessage
    finish_reason: str
    usage: Usage
    deployment: Target
    model: str
    fallback_used: bool
    ttft_ms: float | None
    provider_ms: float
    chunks: int = 0
    error: GatewayError | None = None


@dataclass
class Attempted:
    """What was tried, kept for the error path (which deployment failed last)."""

    deployment: Target | None = None
    emitter: ChunkEmitter | None = None
    #: Deployments that failed before the next one was tried (named in the usage event).
    failures: list[FailedAttempt] = field(default_factory=list)

    def failed(self, target: Target, err: GatewayError) -> None:
        self.failures.append(
            FailedAttempt(
                alias=target.alias, provider=target.provider, model=target.upstream_model, error_code=err.code
            )
        )  # type: ignore[arg-type]


async def settle(
    run: asyncio.Task[T], request_id: str, total_ms: int | None, stopping: Callable[[], None]
) -> tuple[T | None, GatewayError | None]:
    """Await a request's run under its total deadline: ``(outcome, None)`` or ``(None, error)``.
    A cancel of the run (the caller's) is ``Cancelled``, the deadline ``ProviderTimeout``, a
    ``GatewayError`` itself, anything else (an adapter bug) ``InternalError``. When the awaiting
    task is itself being cancelled (this process is stopping), ``stopping()`` runs and the
    cancellation goes on: the plan runs again elsewhere."""
    try:
        async with asyncio.timeout(total_ms / 1000 if total_ms else None):
            return await run, None
    except asyncio.CancelledError:
        if asyncio.current_task().cancelling():  # type: ignore[union-attr]
            stopping()
            raise
        return None, Cancelled(f"request {request_id} was cancelled")
    except TimeoutError:
        return None, ProviderTimeout(f"request exceeded total_ms={total_ms}")
    except GatewayError as err:
        return None, err
    except Exception as exc:  # an adapter bug must still answer the caller
        log.exception("execution of %s failed", request_id)
        return None, InternalError(f"executor failed: {type(exc).__name__}: {exc}")


def retryable(err: GatewayError) -> bool:
    """Whether another attempt may succeed: provider failures that say so (timeouts, 5xx, 408,
    429, lost connections); never a provider's 4xx verdict, nor an error of the gateway's own."""
    return isinstance(err, (ProviderError, ProviderTimeout)) and err.retryable


async def execute(
    plan: ExecutionPlanned,
    targets: list[Target],
    http: HttpTransport,
    secret: SecretLookup,
    emitter: ChunkEmitter | None,
    attempted: Attempted,
    on_fallback: OnFallback,
    check: CheckAnswer | None = None,
) -> Outcome:
    """Try each deployment in order (with ``plan.retries`` retries of retryable failures)
    until one answers. Once a chunk has gone out, no other attempt is made: the caller
    already holds part of this answer. An answer that breaks the request's structured-output
    contract, or that a post-response hook blocks (``check`` for a whole answer, the emitter's
    guard for a stream), is final (an ``Outcome`` with ``error``): neither retried nor a fallback;
    a hook that fails (``internal_error``) is final too."""
    contract = (
        contract_for(plan.request.params.response_format) if plan.request.params.response_format else None
    )
    last: GatewayError | None = None
    for i, dep in enumerate(targets):
        if i > 0 and last is not None:
            await on_fallback(targets[i - 1], dep, last)
        attempted.deployment = dep
        if emitter is not None and i > 0:
            emitter.set_fallback(f"{targets[0].label} -> {dep.label}")
        for _ in range(plan.retries + 1):
            try:
                if emitter is not None:
                    return await _stream_once(
                        plan, dep, http, secret(dep.api_key_env), emitter, i > 0, contract
                    )
                outcome = await _complete_once(plan, dep, http, secret(dep.api_key_env), i > 0, contract)
            except GatewayError as err:
                last = err
                if emitter is not None and emitter.sent_any:
                    raise
                if not retryable(err):
                    break
                continue
            if check is not None and outcome.error is None:
                await check(outcome)
            return outcome
    assert last is not None
    raise last


def _checked(contract: OutputContract | None, message: AssistantMessage, finish: str) -> GatewayError | None:
    """The contract's verdict on a text answer (tool-call answers have no text to check)."""
    if contract is None or finish not in CHECKED_FINISH or message.tool_calls:
        return None
    return contract.violation(message.content, finish)


async def _complete_once(
    plan: ExecutionPlanned,
    dep: Target,
    http: HttpTransport,
    key: str | None,
    fallback: bool,
    contract: OutputContract | None = None,
) -> Outcome:
    t0 = time.perf_counter()
    done = await adapter_for(dep.kind, "chat").complete(http, plan.request, dep, key)
    ms = (time.perf_counter() - t0) * 1000
    error = _checked(contract, done.message, done.finish_reason)
    return Outcome(
        done.message,
        done.finish_reason,
        done.usage,
        dep,
        done.model or dep.upstream_model,
        fallback,
        ms,
        ms,
        error=error,
    )


async def _stream_once(
    plan: ExecutionPlanned,
    dep: Target,
    http: HttpTransport,
    key: str | None,
    emitter: ChunkEmitter,
    fallback: bool,
    contract: OutputContract | None = None,
) -> Outcome:
    """The assembled answer is checked against ``contract`` before the terminal chunk, which
    then carries the error (``finish_reason: error``) instead of the provider's finish. When the
    emitter's guard blocks the answer, reading stops at once and the outcome carries that error."""
    t0 = time.perf_counter()
    ttft: float | None = None
    text: list[str] = []
    tools: dict[int, ToolCallDelta] = {}
    finish, usage, model = "stop", None, None
    emitter.set_source(dep.provider, dep.upstream_model)
    stream = adapter_for(dep.kind, "chat").stream(http, plan.request, dep, key)
    first_deadline = plan.ttft_ms / 1000 if plan.ttft_ms else None
    try:
        while True:
            try:
                if ttft is None and first_deadline is not None:
                    async with asyncio.timeout(first_deadline):
                        delta = await anext(stream)
                else:
                    delta = await anext(stream)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise ProviderTimeout(
                    f"{dep.provider}: no token within ttft_ms={plan.ttft_ms}",
                    details={"upstream_status": None},
                ) from None
            if ttft is None and (delta.content or delta.tool_calls):
                ttft = (time.perf_counter() - t0) * 1000
                emitter.first_token(ttft)
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
        message,
        finish,
        usage,
        dep,
        model or dep.upstream_model,
        fallback,
        ttft,
        (time.perf_counter() - t0) * 1000,
        chunks=emitter.seq,
        error=error,
    )


def error_info(err: GatewayError) -> ErrorInfo:
    """An error as events carry it: ``upstream_status`` has its own field, other details
    (structured-output violations, the provider's error type) stay in ``details``."""
    details = err.details
    return ErrorInfo(
        code=err.code,  # type: ignore[arg-type]
        message=err.message,
        retryable=err.retryable,
        param=err.param,
        upstream_status=details.get("upstream_status"),
        details={k: v for k, v in details.items() if k != "upstream_status"} if details else {},
    )


def usage_record(
    ids: dict[str, object],
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
) -> UsageRecorded:
    """The ``llm.usage`` event of one executed request (any operation): what ``dep`` reported,
    priced by the catalog; status ``ok``, ``cancelled`` or ``error``."""
    status = "ok" if error is None else ("cancelled" if isinstance(error, Cancelled) else "error")
    return UsageRecorded(
        **ids,  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
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
        cost_usd=cost_usd(usage, dep) if usage else 0.0,
        ttft_ms=ttft_ms,
        total_ms=total_ms,
        error_code=error.code if error else None,  # type: ignore[arg-type]
        streamed=req.stream,
        fallback_used=fallback_used,
        units=usage.units if usage else {},
        failed_attempts=failures or None,
    )


def chunk_template(plan: ExecutionPlanned) -> ChunkEmitted:
    """The chunk events' common fields (``seq`` and the rest are set per chunk)."""
    req = plan.request
    return ChunkEmitted(request_id=req.request_id, tenant_id=req.tenant_id, user_id=req.user_id, seq=0)

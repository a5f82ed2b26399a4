"""A provider batch's items, from the requests file to each item's own records (pure: no I/O).

``parse_items`` reads the batch's JSONL (one request event per line, README "Batches") and
checks every line belongs to the run: the run's tenant, batch and alias (the router admitted
the run's alias for the tenant; a line naming another would escape that check), the line's
place, a chat or embeddings request as the endpoint says.

``item_records`` turns one line's outcome at the provider into what a single call of that
request would have left: its terminal job record (``completed`` with the ``ResultProduced``
the kind's normal response parser reads from the provider's answer; ``failed`` with the
provider's error, mapped as a single call's; ``cancelled`` for a line the cancel stopped;
``failed`` with ``batch_expired`` for one the completion window stopped; ``failed`` for a line
the provider reported nothing of), its usage record (``usage_record``: the batch discount,
``batch_id`` and ``custom_id``), and its final audit record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pydantic
from pydantic import TypeAdapter

from services.contracts.errors import (
    BatchExpired,
    Cancelled,
    GatewayError,
    ProviderError,
    ValidationError,
)
from services.contracts.events import (
    AnyRequest,
    AuditAction,
    AuditContent,
    AuditRecorded,
    BatchRunRequested,
    ChatRequested,
    Embedding,
    EmbeddingsOutput,
    EmbedRequested,
    ErrorInfo,
    JobUpdated,
    Latency,
    ResultProduced,
    Usage,
    UsageRecorded,
)
from services.runtime.batches import foreign_item
from services.runtime.jobs import job_state

from .handlers import usage_record
from .providers._http import error_message
from .providers.base import upstream_error
from .providers.batch_base import BatchLine, LineResult
from .providers.registry import adapter_for
from .targets import Target

_REQUEST: TypeAdapter[Any] = TypeAdapter(AnyRequest)
#: The operation of an endpoint's lines.
ENDPOINT_OPERATION = {"/v1/chat/completions": "chat", "/v1/messages": "chat", "/v1/embeddings": "embed"}


def parse_items(raw: bytes, run: BatchRunRequested) -> list[BatchLine]:
    """The run's items in line order (``ValidationError`` naming the first line that is not one)."""
    want = ENDPOINT_OPERATION.get(run.endpoint)
    if want is None:
        raise ValidationError(
            f"batch endpoint {run.endpoint!r} is not one of {', '.join(ENDPOINT_OPERATION)}"
        )
    items: list[BatchLine] = []
    for n, line in enumerate(x for x in raw.splitlines() if x.strip()):
        try:
            item = _REQUEST.validate_json(line)
        except pydantic.ValidationError as exc:
            raise ValidationError(
                f"batch {run.batch_id}: line {n} is not a request event ({exc.error_count()} errors)"
            ) from None
        problem = _foreign(item, run, n, want)
        if problem:
            raise ValidationError(f"batch {run.batch_id}: line {n} {problem}")
        items.append(item)
    if len(items) != run.total:
        raise ValidationError(f"batch {run.batch_id}: {len(items)} lines, the run says {run.total}")
    return items


def _foreign(item: Any, run: BatchRunRequested, n: int, operation: str) -> str | None:
    if not isinstance(item, ChatRequested | EmbedRequested) or item.operation != operation:
        return f"is a {getattr(item, 'operation', '?')} request, not {operation}"
    if (problem := foreign_item(item, run.tenant_id, run.batch_id, n)) is not None:
        return problem
    if item.model != run.model:
        return f"names model {item.model!r}, not the batch's {run.model!r}"
    return None


@dataclass(frozen=True)
class ItemRecords:
    """What one item leaves: its terminal job record, its usage record, its audit record."""

    job: JobUpdated
    usage: UsageRecorded
    audit: AuditRecorded


def item_records(
    item: BatchLine,
    line: LineResult | None,
    target: Target,
    *,
    total_ms: float,
    content: AuditContent | None = None,
) -> ItemRecords:
    """``item``'s records from its ``line`` at the provider (None: the provider reported nothing)."""
    done, error = _read(item, line, target)
    if done is not None:
        usage, model = done.usage, done.model or target.upstream_model
        result = ResultProduced(
            request_id=item.request_id,
            tenant_id=item.tenant_id,
            user_id=item.user_id,
            operation=item.operation,
            status="ok",
            message=done.message,
            output=done.output,
            finish_reason=done.finish_reason,  # type: ignore[arg-type]
            alias=target.alias,
            provider=target.provider,
            model=model,
            usage=usage,
            latency=Latency(total_ms=total_ms, provider_ms=total_ms),
            attempts=1,
        )
        job = job_state(item, "completed", result=result)
        action: AuditAction = "completed"
        completion = done.message.content if done.message is not None else None
    else:
        assert error is not None
        usage, model, completion = None, target.upstream_model, None
        cancelled = isinstance(error, Cancelled)
        job = job_state(item, "cancelled" if cancelled else "failed", error=ErrorInfo.of(error))
        action = "cancelled" if cancelled else "failed"
    bill = usage_record(item, target, model, usage, error, 0.0, attempts=0 if usage is None else 1)
    bill = bill.model_copy(update={"total_ms": None})  # no call of its own (the router's statistics skip it)
    audit = AuditRecorded(
        request_id=item.request_id,
        tenant_id=item.tenant_id,
        user_id=item.user_id,
        action=action,
        operation=item.operation,
        actor="executor",
        alias=target.alias,
        provider=target.provider,
        model=model,
        client_id=item.client_id,
        error_code=error.code if error else None,
        reason=error.message if error else None,
        content=content.model_copy(update={"completion": completion}) if content is not None else None,
    )
    return ItemRecords(job, bill, audit)


@dataclass(frozen=True)
class _Done:
    usage: Usage
    model: str
    message: Any = None
    finish_reason: str | None = None
    output: EmbeddingsOutput | None = None


def _read(
    item: BatchLine, line: LineResult | None, target: Target
) -> tuple[_Done | None, GatewayError | None]:
    """The answer a succeeded line holds (read by the kind's parser), else the item's error."""
    if line is None:
        return None, ProviderError(
            f"{target.provider}: the batch's results hold nothing of item {item.request_id}",
            details={"upstream_status": None},
        )
    if line.kind == "canceled":
        return None, Cancelled(f"item {item.request_id} was cancelled before it ran")
    if line.kind == "expired":
        return None, BatchExpired(f"item {item.request_id} did not run within the batch's completion window")
    if line.kind == "errored" or line.body is None:
        if line.status is not None:
            raw = orjson.dumps(line.body) if line.body is not None else (line.message or "").encode()
            return None, upstream_error(target.provider, line.status, error_message(raw))
        return None, ProviderError(
            f"{target.provider}: batch item failed: {line.message or 'no reason given'}",
            details={"upstream_status": None},
        )
    try:
        if isinstance(item, EmbedRequested):
            got = adapter_for(target.kind, "embed").from_wire(line.body, item)
            output = EmbeddingsOutput(
                data=[Embedding(index=i, embedding=v) for i, v in enumerate(got.vectors)]
            )
            return _Done(got.usage, got.model, output=output), None
        done = adapter_for(target.kind, "chat").from_wire(line.body, item)
        return _Done(done.usage, done.model, message=done.message, finish_reason=done.finish_reason), None
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return None, ProviderError(
            f"{target.provider}: unexpected response shape of item {item.request_id} ({type(exc).__name__})",
            details={"upstream_status": None},
        )

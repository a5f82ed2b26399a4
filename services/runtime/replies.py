"""Where a request's chunks and result go (DESIGN §2), and how a request is answered with
an error before it ever ran (router rejections, events that do not decode)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pydantic
from aiokafka.structs import ConsumerRecord

from services.contracts.errors import CapabilityNotSupported, GatewayError, ValidationError
from services.contracts.events import (
    OPERATIONS,
    AuditAction,
    AuditContent,
    AuditRecorded,
    ErrorInfo,
    ReplyTo,
    RequestBase,
    ResultProduced,
)

from .kafka import Publisher, validation_reason
from .topics import Topics


def result_target(req: RequestBase, topics: Topics) -> tuple[str, int | None]:
    """The caller's reply partition when it named one, else ``llm.results`` keyed by request id."""
    if req.reply_to is not None:
        return req.reply_to.topic, req.reply_to.partition
    return topics.results.name, None


def chunk_target(req: RequestBase, topics: Topics) -> tuple[str, int | None]:
    if req.reply_to is not None:
        return req.reply_to.topic, req.reply_to.partition
    return topics.chunks.name, None


#: The audit action of a rejection, by error code (others are ``blocked``).
REJECTION_ACTIONS: dict[str, AuditAction] = {
    "rate_limited": "rate_limited",
    "budget_exceeded": "budget_exceeded",
}


async def reject(
    publisher: Publisher,
    topics: Topics,
    req: RequestBase,
    err: GatewayError,
    actor: str,
    alias: str | None = None,
    action: AuditAction | None = None,
    content: AuditContent | None = None,
    reason: str | None = None,
) -> None:
    """Answer ``req`` with ``err`` (its ``details`` too) and record an audit event: ``action``,
    by default ``rate_limited`` / ``budget_exceeded`` for those codes, else ``blocked``, with
    ``reason`` (default: the error's message); both acknowledged."""
    topic, partition = result_target(req, topics)
    model = alias or getattr(req, "model", None)
    result = ResultProduced(
        request_id=req.request_id,
        tenant_id=req.tenant_id,
        user_id=req.user_id,
        status="error",
        operation=req.operation,
        alias=model,
        error=ErrorInfo(
            code=err.code,
            message=err.message,
            param=err.param,
            retryable=err.retryable,
            details=err.details,
        ),
    )
    audit = AuditRecorded(
        request_id=req.request_id,
        tenant_id=req.tenant_id,
        user_id=req.user_id,
        action=action or REJECTION_ACTIONS.get(err.code, "blocked"),
        operation=req.operation,
        actor=actor,
        alias=model,
        client_id=req.client_id,
        error_code=err.code,
        reason=err.message if reason is None else reason,
        content=content,
    )
    futs = [
        await publisher.publish(topic, result, key=req.request_id, partition=partition),
        await publisher.publish(topics.audit.name, audit, key=req.tenant_id),
    ]
    await asyncio.gather(*futs)


def invalid_error(exc: pydantic.ValidationError, operation: Any) -> GatewayError:
    """What a caller hears about a request that does not decode: an operation nobody here
    knows is ``capability_not_supported`` naming it; anything else ``validation_error``."""
    if any(e["type"] == "union_tag_invalid" for e in exc.errors()) and isinstance(operation, str):
        return CapabilityNotSupported(
            f"operation {operation!r} is not supported (supported: {', '.join(OPERATIONS)})",
            param="operation",
        )
    return ValidationError(f"invalid request: {validation_reason(exc)}")


async def answer_invalid(
    publisher: Publisher,
    topics: Topics,
    record: ConsumerRecord,
    exc: pydantic.ValidationError,
    *,
    actor: str,
    inner: str | None = None,
) -> None:
    """Tell the caller of an event that failed validation (already dead-lettered) why, if the
    event says who asked and where to answer. ``inner`` names the field holding the request
    (``request`` in an execution plan)."""
    try:
        doc = orjson.loads(record.value or b"")
        if inner is not None:
            doc = doc[inner]
        request_id, tenant_id = doc["request_id"], doc["tenant_id"]
        reply_to = ReplyTo.model_validate(doc["reply_to"]) if doc.get("reply_to") else None
        if not (isinstance(request_id, str) and isinstance(tenant_id, str)):
            return
    except (orjson.JSONDecodeError, KeyError, TypeError, pydantic.ValidationError):
        return
    operation = doc.get("operation")
    model = doc.get("model")
    stub = RequestBase.model_construct(
        request_id=request_id,
        tenant_id=tenant_id,
        user_id=doc.get("user_id") if isinstance(doc.get("user_id"), str) else None,
        operation=operation if isinstance(operation, str) else "unknown",
        reply_to=reply_to,
        client_id=doc.get("client_id") if isinstance(doc.get("client_id"), str) else None,
    )
    alias = model if isinstance(model, str) else None
    await reject(publisher, topics, stub, invalid_error(exc, operation), actor, alias)

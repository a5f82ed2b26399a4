"""The router's pre-call step: a tenant's hooks before its request is planned.

``pre_call`` answers the request to plan (unchanged, or as the hooks modified it), or, when a hook
blocked it, ``None`` after answering the caller: the result carries the block's error
(``request_blocked`` naming the rule in the message and ``error.details.rule``, or the error the
hook chose) and ``llm.audit`` gets ``blocked`` with the rule as ``reason`` (the offending text
only as ``content`` for a tenant whose policy includes content); both are acknowledged before the request's offset is committed.
"""

from __future__ import annotations

import asyncio

from services.contracts.events import AuditContent, AuditRecorded, ErrorInfo, ResultProduced
from services.runtime.hooks import Block, HookChain, HookRequest, block_error
from services.runtime.kafka import Publisher
from services.runtime.replies import result_target
from services.runtime.request_log import RequestLog
from services.runtime.topics import Topics


async def pre_call(
    chain: HookChain,
    req: HookRequest,
    publisher: Publisher,
    topics: Topics,
    log: RequestLog,
    content: AuditContent | None = None,
) -> HookRequest | None:
    """Raises ``GatewayError`` when a hook failed (the caller answers it like any rejection)."""
    checked = await chain.pre_call(req)
    if not isinstance(checked, Block):
        return checked
    await refuse(publisher, topics, req, checked, content)
    log.rejected(req, block_error(checked, "request").code)
    return None


async def refuse(
    publisher: Publisher, topics: Topics, req: HookRequest, block: Block, content: AuditContent | None = None
) -> None:
    err = block_error(block, "request")
    topic, partition = result_target(req, topics)
    result = ResultProduced(
        request_id=req.request_id,
        tenant_id=req.tenant_id,
        user_id=req.user_id,
        status="error",
        operation=req.operation,
        alias=req.model,
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
        action="blocked",
        operation=req.operation,
        actor="router",
        alias=req.model,
        client_id=req.client_id,
        error_code=err.code,
        reason=block.rule,
        content=content,
    )
    await asyncio.gather(
        await publisher.publish(topic, result, key=req.request_id, partition=partition),
        await publisher.publish(topics.audit.name, audit, key=req.tenant_id),
    )

"""The router's pre-call step: a tenant's hooks before its request is planned.

``pre_call`` answers the request to plan (unchanged, or as the hooks modified it), or, when a hook
blocked it, ``None`` after answering the caller: the result carries the block's error
(``request_blocked`` naming the rule in the message and ``error.details.rule``, or the error the
hook chose) and ``llm.audit`` gets ``blocked`` with the rule as ``reason`` (the offending text
only as ``content`` for a tenant whose policy includes content); both are acknowledged before the request's offset is committed.
"""

from __future__ import annotations

from services.contracts.events import AuditContent
from services.runtime.hooks import Block, HookChain, HookRequest, block_error
from services.runtime.kafka import Publisher
from services.runtime.replies import reject
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
    """Answer the block's error; audit ``blocked`` with the rule as the reason."""
    await reject(
        publisher,
        topics,
        req,
        block_error(block, "request"),
        "router",
        action="blocked",
        content=content,
        reason=block.rule,
    )

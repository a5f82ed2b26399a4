"""The edge's own rejections, recorded: a request it refused before it ever reached the pipeline.

Which: a missing, malformed or unknown API key (401, ``authentication_error``), a body over the
limit (413, ``payload_too_large``), a body or header the edge cannot read (400,
``validation_error``: not JSON, a field of the wrong type, a bad ``x-request-id``). Errors the
pipeline answered (the router's validation, a provider's failure) are recorded where they were
decided, not here.

Each gets one ``llm.audit`` record: action ``blocked``, actor ``edge``, the error code, the
caller's tenant and user when the key was known (else tenant ``unknown``, a name the
configuration reserves, and no user), and as ``reason`` the error message plus the client's
address; never the key, nor anything of the body. The record is handed to the producer and not
waited for: the refusal goes out at once, and a request that is served never comes here. Each
also gets its request-log line (``http_status`` set).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from services.contracts.errors import GatewayError
from services.contracts.events import AuditRecorded
from services.runtime.config import UNKNOWN_TENANT
from services.runtime.request_log import RequestLog

from .asgi import Request

log = logging.getLogger(__name__)

#: Error codes of the edge's own refusals.
OWN = frozenset({"authentication_error", "payload_too_large", "validation_error"})

Audit = Callable[[AuditRecorded], Awaitable["asyncio.Future[object]"]]


class Rejections:
    """``audit``: publishes an audit record (the pipeline client's ``audit``; None: not published)."""

    def __init__(self, request_log: RequestLog, audit: Audit | None = None):
        self.request_log = request_log
        self.audit = audit

    @staticmethod
    def own(req: Request, err: GatewayError) -> bool:
        """Whether the edge itself answered ``err`` before the pipeline saw ``req``."""
        return err.code in OWN and not req.dispatched

    async def record(self, req: Request, err: GatewayError, status: int, operation: str | None) -> None:
        caller = req.caller
        tenant = caller.tenant_id if caller else UNKNOWN_TENANT
        user = caller.user_id if caller else None
        key = getattr(caller, "key", None)
        self.request_log.outcome(
            request_id=req.request_id,
            tenant=tenant,
            user=user,
            api_key=key,
            client_id=req.client_id,
            operation=operation,
            status="error",
            error=err.code,
            http_status=status,
            latency_ms=(time.perf_counter() - req.started) * 1000,
        )
        if self.audit is None:
            return
        client = req.scope.get("client")
        who = f" (client {client[0]})" if client else ""
        event = AuditRecorded(
            request_id=req.request_id,
            tenant_id=tenant,
            user_id=user,
            action="blocked",
            operation=operation,
            actor="edge",
            client_id=req.client_id,
            error_code=err.code,
            reason=err.message + who,
        )
        try:
            ack = await self.audit(event)
        except Exception:
            log.exception("could not publish the audit record of rejected request %s", req.request_id)
            return
        ack.add_done_callback(_log_failure)


def _log_failure(ack: asyncio.Future[object]) -> None:
    if not ack.cancelled() and ack.exception() is not None:
        log.error("audit record of an edge rejection was not stored: %s", ack.exception())

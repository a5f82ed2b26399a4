"""What an audit record may say about a request's text: nothing, unless the tenant's policy is
``audit.include_content: true`` (README "Hooks and plugins"). Every service that writes audit
records (router, executor) asks ``audit_content`` for the record's ``content``."""

from __future__ import annotations

from services.contracts.events import AuditContent, ChatRequested, EmbedRequested, RequestBase

from .config import GatewayConfig


def includes_content(config: GatewayConfig, tenant_id: str) -> bool:
    tc = config.tenants.get(tenant_id)
    return tc is not None and tc.audit.include_content


def audit_content(
    config: GatewayConfig, req: RequestBase, completion: str | None = None
) -> AuditContent | None:
    """``req``'s messages (or embedding inputs) and ``completion`` for a tenant whose policy
    includes content; ``None`` for every other tenant."""
    if not includes_content(config, req.tenant_id):
        return None
    if isinstance(req, ChatRequested):
        return AuditContent(messages=req.messages, completion=completion)
    if isinstance(req, EmbedRequested):
        return AuditContent(input=req.input)
    return AuditContent(completion=completion)

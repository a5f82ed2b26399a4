"""The Usage and Audit plugin roles (issue 11): what another billing or audit system implements
to take the place of the gateway's own ledgers.

* ``UsagePlugin``: ``record`` stores one usage record (the usage sink calls it for every record
  of ``llm.usage``); ``check_budget`` and ``report_usage`` are the router's questions at admission
  and settlement. The default is the usage sink's S3 ledger (``services/usage_sink``), which has
  no budget opinion of its own: budgets set in the configuration are the router's ledger.
* ``AuditPlugin``: ``record`` stores one audit record (the audit sink, for ``llm.audit``); the
  default is the audit sink's hash-chained S3 ledger (``services/audit_sink``).

Delivery is at least once: after a crash ``record`` is called again for a position it may have
stored already. An implementation stores each ``Position`` at most once and returns only once
the record is stored: the caller commits the offset after that, so nothing is lost either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Literal, Protocol, TypeVar, cast

from services.contracts.events import AuditRecorded, RequestBase, UsageRecorded

if TYPE_CHECKING:
    from .config import GatewayConfig


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record was read: the idempotency key of a sink (one record per position)."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class BudgetVerdict:
    """``allowed`` False refuses the request (``budget_exceeded``); ``remaining_usd`` is what the
    binding budget has left, when the plugin knows it; ``reason`` names the budget."""

    allowed: bool
    remaining_usd: float | None = None
    reason: str | None = None


NO_OPINION = BudgetVerdict(allowed=True)


class UsagePlugin(Protocol):
    async def record(self, usage: UsageRecorded, position: Position) -> None:
        """Store ``usage`` durably; return once stored. A position already stored is not stored again."""
        ...

    async def check_budget(self, request: RequestBase, *, max_cost_usd: float) -> BudgetVerdict:
        """At admission: may ``request``, costing at most ``max_cost_usd``, run?"""
        ...

    async def report_usage(self, usage: UsageRecorded) -> None:
        """After a request: what it really cost (settles what ``check_budget`` let through)."""
        ...

    async def aclose(self) -> None: ...


class AuditPlugin(Protocol):
    async def record(self, audit: AuditRecorded, position: Position) -> None:
        """Append ``audit`` durably; return once stored. A position already stored is not stored again."""
        ...

    async def aclose(self) -> None: ...


class NoopUsagePlugin:
    """Stores nothing, allows everything (a tenant whose usage goes nowhere but Kafka)."""

    async def record(self, usage: UsageRecorded, position: Position) -> None:
        pass

    async def check_budget(self, request: RequestBase, *, max_cost_usd: float) -> BudgetVerdict:
        return NO_OPINION

    async def report_usage(self, usage: UsageRecorded) -> None:
        pass

    async def aclose(self) -> None:
        pass


class Closable(Protocol):
    async def aclose(self) -> None: ...


P = TypeVar("P", bound=Closable)


class NoopAuditPlugin:
    async def record(self, audit: AuditRecorded, position: Position) -> None:
        pass

    async def aclose(self) -> None:
        pass


# --- per tenant (``tenants.<t>.plugins``) -------------------------------------------------------


class TenantPlugins(Generic[P]):
    """The plugin of each tenant for one role: ``for_tenant(t)`` is the plugin its configuration
    names (``s3``: ``default``, the sink's own ledger; ``noop``; or an entry point of the role's
    group, built once per name at start). A tenant not in the configuration gets ``default``.
    ``custom`` holds the tenants whose plugin is an entry point (what the router asks)."""

    def __init__(self, default: P, by_tenant: Mapping[str, P], custom: Mapping[str, P]):
        self.default = default
        self._by_tenant = dict(by_tenant)
        self.custom = dict(custom)
        self._owned = {id(p): p for p in self._by_tenant.values() if p is not default}

    def for_tenant(self, tenant_id: str) -> P:
        return self._by_tenant.get(tenant_id, self.default)

    async def aclose(self) -> None:
        """Close every plugin built here, then ``default``."""
        for p in self._owned.values():
            await p.aclose()
        await self.default.aclose()

    @classmethod
    def build(cls, config: GatewayConfig, role: Literal["usage", "audit"], default: P) -> TenantPlugins[P]:
        """Every tenant's plugin for ``role``; an entry point that cannot be built raises
        ``PluginError`` naming the tenant (a service then refuses to start)."""
        from .entrypoints import AUDIT, USAGE, PluginError, create

        group: str = USAGE if role == "usage" else AUDIT
        protocol: type[Closable] = UsagePlugin if role == "usage" else AuditPlugin
        noop: type[Closable] = NoopUsagePlugin if role == "usage" else NoopAuditPlugin
        built: dict[str, P] = {}
        by_tenant: dict[str, P] = {}
        custom: dict[str, P] = {}
        for tenant, tc in config.tenants.items():
            name = getattr(tc.plugins, role)
            if name == "s3":
                by_tenant[tenant] = default
                continue
            if name not in built:
                try:
                    built[name] = cast(P, noop() if name == "noop" else create(group, name, protocol))
                except PluginError as exc:
                    raise PluginError(f"tenants.{tenant}.plugins.{role}: {exc}") from None
            by_tenant[tenant] = built[name]
            if name != "noop":
                custom[tenant] = built[name]
        return cls(default, by_tenant, custom)

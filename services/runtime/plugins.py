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

from dataclasses import dataclass
from typing import Protocol

from services.contracts.events import AuditRecorded, RequestBase, UsageRecorded


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


class NoopAuditPlugin:
    async def record(self, audit: AuditRecorded, position: Position) -> None:
        pass

    async def aclose(self) -> None:
        pass

"""Budgets in USD per calendar period (README "Rate limits and budgets"); pure, no I/O.

A period is a UTC day (``day:YYYY-MM-DD``, from 00:00) or a UTC month (``month:YYYY-MM``,
from the 1st); a request belongs to the periods it was admitted in. Sums are kept per
(scope, period): scope ``tenant``, ``user:<id>`` or ``key:<name>``. A request is admitted
when, for every budget of its scopes, settled spend + open reservations + its maximum cost
stay within the budget.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from services.contracts.errors import BudgetExceeded
from services.runtime.config import Budget, TenantConfig

#: (scope, period) -> USD.
Sums = Mapping[tuple[str, str], float]


def periods(at: float) -> tuple[str, str]:
    """The day and the month ``at`` (epoch seconds) falls in."""
    return _periods(int(at // 86400))


@lru_cache(maxsize=64)
def _periods(day: int) -> tuple[str, str]:
    t = time.gmtime(day * 86400)
    return f"day:{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}", f"month:{t.tm_year:04d}-{t.tm_mon:02d}"


def period_start(kind: str, at: float) -> float:
    """Epoch seconds of the start of the ``kind`` period holding ``at``."""
    d = datetime.fromtimestamp(at, UTC)
    start = d.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind == "month":
        start = start.replace(day=1)
    return start.timestamp()


def scopes(user: str | None, key: str | None) -> tuple[str, ...]:
    """The budget scopes of a request: the tenant, its user and its API key when it has them."""
    out = ["tenant"]
    if user:
        out.append(f"user:{user}")
    if key:
        out.append(f"key:{key}")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Applicable:
    """One budget as it applies to one request: its scope and limit in USD."""

    scope: str
    period: str
    usd: float
    name: str  # how messages name it: "the daily budget of user u1"


def applicable(
    tenant_id: str, tc: TenantConfig, user: str | None, key: str | None, now: float
) -> list[Applicable]:
    """The budgets a request of ``user`` with ``key`` must fit, in configuration order."""
    day, month = periods(now)
    out = []
    for b in tc.budgets:
        scope, who = _scope(b, tenant_id, user, key)
        if scope is None:
            continue
        usd = b.overrides.get(who, b.usd) if b.per != "tenant" else b.usd
        label = "daily" if b.period == "day" else "monthly"
        out.append(
            Applicable(
                scope, day if b.period == "day" else month, usd, f"the {label} budget of {_who(b, who)}"
            )
        )
    return out


def _scope(b: Budget, tenant_id: str, user: str | None, key: str | None) -> tuple[str | None, str]:
    if b.per == "tenant":
        return "tenant", tenant_id
    if b.per == "user":
        return (f"user:{user}", user) if user else (None, "")
    return (f"key:{key}", key) if key else (None, "")


def _who(b: Budget, who: str) -> str:
    return {"tenant": f"tenant {who}", "user": f"user {who}", "key": f"key {who!r}"}[b.per]


def check(budgets: list[Applicable], spent: Sums, reserved: Sums, cost: float) -> None:
    """``BudgetExceeded`` (402) for the first budget that ``cost`` more would overrun, naming
    what remains; ``details``: ``budget_usd``, ``remaining_usd``, ``max_cost_usd``, ``period``, ``scope``."""
    for b in budgets:
        used = spent.get((b.scope, b.period), 0.0) + reserved.get((b.scope, b.period), 0.0)
        if used + cost > b.usd + 1e-12:
            remaining = max(b.usd - used, 0.0)
            raise BudgetExceeded(
                f"{b.name} (USD {b.usd:g} for {b.period.split(':', 1)[1]}) has USD {remaining:.6f} left;"
                f" this request may cost up to USD {cost:.6f} (its prompt and max_tokens at the model's price:"
                " set max_tokens to reserve less)",
                details={
                    "budget_usd": b.usd,
                    "remaining_usd": round(remaining, 10),
                    "max_cost_usd": round(cost, 10),
                    "period": b.period,
                    "scope": b.scope,
                },
            )

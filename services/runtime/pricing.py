"""The one price function: what a request's usage costs at a deployment's catalog price.

The executor prices every usage record with it (``UsageRecorded.cost_usd``) and the router
prices a request's worst case with it at admission (budget reservations), so a reservation
and the spend that settles it can never disagree about prices.
"""

from __future__ import annotations

from typing import Protocol

from services.contracts.events import Price, Usage


class Priced(Protocol):
    """Anything with a catalog price: a configured deployment, an executor's target."""

    @property
    def price(self) -> Price: ...


def cost_usd(usage: Usage, priced: Priced, *, batch: bool = False) -> float:
    """Catalog price x usage: tokens per million (cached input at its own price when the
    catalog has one), plus each unit at its ``per_unit`` price (units without one are free);
    a batch item's (``batch``) less the price's ``batch_discount``. Rounded to 1e-10 USD."""
    p = priced.price
    cached_price = p.cached_input_per_mtok if p.cached_input_per_mtok is not None else p.input_per_mtok
    uncached = max(usage.prompt_tokens - usage.cached_tokens, 0)
    tokens = (
        uncached * p.input_per_mtok
        + usage.cached_tokens * cached_price
        + usage.completion_tokens * p.output_per_mtok
    ) / 1_000_000
    units = sum(n * p.per_unit.get(unit, 0.0) for unit, n in usage.units.items()) if usage.units else 0.0
    total = tokens + units
    if batch:
        total *= 1.0 - p.batch_discount
    return round(total, 10)

"""The order an alias's deployments are tried in (its ``routing``), a pure function of the
deployments, the router's statistics and the request.

Only deployments with every capability the request needs are candidates (an alias's
capabilities, or a deployment's own ``capabilities`` where it sets them). Candidates the
statistics say are unusable (``stats.RoutingStats.usable``) go after the usable ones; each
group is ordered by the alias's routing:

* ``weighted``: the first drawn by ``weight``, the rest in configuration order.
* ``cheapest``: ascending price, where a deployment's price is ``input_per_mtok +
  output_per_mtok`` (a call with as many tokens out as in), then the sum of its ``per_unit``
  prices; equal prices keep configuration order.
* ``fastest``: ascending moving average of observed time to first token for a streamed
  request, of the whole answer's time for a non-streamed one. Deployments with no
  observation of that kind yet come first (in configuration order), so each gets measured.
"""

from __future__ import annotations

import random
from collections.abc import Collection

from services.runtime.config import DeploymentConfig, ModelConfig

from .stats import RoutingStats


def capable(model: ModelConfig, needed: Collection[str]) -> list[DeploymentConfig]:
    """The deployments of ``model`` that have every capability in ``needed``."""
    extract = model.documents == "extract"  # the gateway sends a PDF's text: no native documents needed

    def has(caps: Collection[str]) -> bool:
        return all(c in caps or (c == "documents" and extract) for c in needed)

    alias_ok = has(model.capabilities)
    return [d for d in model.deployments if (alias_ok if d.capabilities is None else has(d.capabilities))]


def price_key(d: DeploymentConfig) -> tuple[float, float]:
    p = d.price
    return p.input_per_mtok + p.output_per_mtok, sum(p.per_unit.values())


def order(
    alias: str,
    model: ModelConfig,
    deps: list[DeploymentConfig],
    stats: RoutingStats | None,
    *,
    streamed: bool,
    rng: random.Random | None = None,
) -> list[DeploymentConfig]:
    """``deps`` (candidates of ``alias``) in the order to try them."""
    if len(deps) < 2:
        return deps
    if stats is None:
        return _by(model.routing, alias, deps, None, streamed, rng)
    usable: list[DeploymentConfig] = []
    unusable: list[DeploymentConfig] = []
    for d in deps:
        (usable if stats.usable((alias, d.provider, d.model)) else unusable).append(d)
    return _by(model.routing, alias, usable, stats, streamed, rng) + _by(
        model.routing, alias, unusable, stats, streamed, rng
    )


def _by(
    routing: str,
    alias: str,
    deps: list[DeploymentConfig],
    stats: RoutingStats | None,
    streamed: bool,
    rng: random.Random | None,
) -> list[DeploymentConfig]:
    if len(deps) < 2:
        return deps
    if routing == "cheapest":
        return sorted(deps, key=price_key)
    if routing == "fastest":
        unmeasured: list[DeploymentConfig] = []
        measured: list[tuple[float, int, DeploymentConfig]] = []
        for i, d in enumerate(deps):
            avg = stats.average((alias, d.provider, d.model), streamed) if stats is not None else None
            if avg is None:
                unmeasured.append(d)
            else:
                measured.append((avg, i, d))
        return unmeasured + [d for _, _, d in sorted(measured, key=lambda m: (m[0], m[1]))]
    deps = list(deps)
    first = (rng or random).choices(range(len(deps)), weights=[d.weight for d in deps])[0]
    deps.insert(0, deps.pop(first))
    return deps

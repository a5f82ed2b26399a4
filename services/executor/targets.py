"""Where a plan's deployments really are: resolved from the executor's own configuration.

A plan names deployments only (alias, provider, upstream model). The provider's kind, URL,
credential variable and timeout, the price and the batch limit all come from the
configuration this process loaded; a plan naming anything it does not have is not run
(``DeadLetter``), so nothing written to ``llm.exec`` can choose where a secret is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.contracts.events import Deployment, ExecutionPlanned, Price
from services.runtime.config import GatewayConfig
from services.runtime.kafka import DeadLetter


@dataclass(frozen=True, slots=True)
class Target:
    """One deployment, with everything the executor needs to call it."""

    alias: str
    provider: str
    kind: str
    base_url: str
    upstream_model: str
    api_key_env: str | None = None
    price: Price = field(default_factory=Price)
    timeout_s: float | None = None
    max_batch_inputs: int = 2048

    @property
    def label(self) -> str:
        """``alias/provider``: how results and headers name a deployment."""
        return f"{self.alias}/{self.provider}"


class Targets:
    """Resolves plan deployments against one configuration (memoised: the set is finite)."""

    def __init__(self, config: GatewayConfig):
        self.config = config
        self._known: dict[tuple[str, str, str], Target] = {}

    def resolve(self, plan: ExecutionPlanned) -> list[Target]:
        return [self.one(d) for d in plan.deployments]

    def one(self, d: Deployment) -> Target:
        key = (d.alias, d.provider, d.upstream_model)
        target = self._known.get(key)
        if target is None:
            target = self._known[key] = self._build(d)
        return target

    def _build(self, d: Deployment) -> Target:
        provider = self.config.providers.get(d.provider)
        if provider is None:
            raise DeadLetter(f"plan names provider {d.provider!r}, which this executor's configuration does not have")
        dep = self.config.deployment(d.alias, d.provider, d.upstream_model)
        if dep is None:
            raise DeadLetter(
                f"plan names deployment {d.alias}/{d.provider}/{d.upstream_model}, which this executor's"
                " configuration does not have"
            )
        return Target(
            alias=d.alias,
            provider=d.provider,
            kind=provider.kind,
            base_url=provider.base_url,
            upstream_model=d.upstream_model,
            api_key_env=provider.api_key_env,
            price=dep.price,
            timeout_s=provider.timeout_s,
            max_batch_inputs=dep.max_batch_inputs,
        )

"""Where a plan's deployments really are: resolved from the executor's own configuration.

A plan names deployments only (alias, provider, upstream model). The provider's kind, URL,
credential variable and timeout, the price, the batch limit, the alias's retries and circuit
breaker all come from the
configuration this process loaded; a plan naming anything it does not have is not run
(``DeadLetter``), so nothing written to ``llm.exec`` can choose where a secret is sent.

Deployments (alias -> upstream model, price, batch limit) come from the Model Registry the
configuration names (``services/runtime/model_registry.py``): the file's ``models``, or an
HTTP registry's catalog, so a model only that registry knows can run. Providers (URL,
credential variable) only ever come from the file. A model added to an HTTP registry is
known here from this process's next read of it (at most ``cache_ttl_s`` later).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.contracts.events import Deployment, ExecutionPlanned, Price
from services.runtime.config import BreakerConfig, GatewayConfig
from services.runtime.kafka import DeadLetter
from services.runtime.model_registry import ModelRegistry, model_registry


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
    #: The alias's own retries and circuit breaker (None: the configuration's defaults).
    retries: int | None = None
    breaker: BreakerConfig | None = None
    #: The alias's ``documents``: "extract" sends a PDF's text instead of the PDF.
    documents: str | None = None

    @property
    def label(self) -> str:
        """``alias/provider``: how results and headers name a deployment."""
        return f"{self.alias}/{self.provider}"


class Targets:
    """Resolves plan deployments against the configuration's providers and the Model
    Registry's catalog (default: the one the configuration names). Memoised (the set is
    finite); the memo is dropped whenever the registry's catalog changes."""

    def __init__(self, config: GatewayConfig, registry: ModelRegistry | None = None):
        self.config = config
        self.registry = registry if registry is not None else model_registry(config)
        self._catalog = self.registry.catalog()
        self._known: dict[tuple[str, str, str], Target] = {}

    def resolve(self, plan: ExecutionPlanned) -> list[Target]:
        return [self.one(d) for d in plan.deployments]

    def one(self, d: Deployment) -> Target:
        catalog = self.registry.catalog()
        if catalog is not self._catalog:
            self._catalog, self._known = catalog, {}
        key = (d.alias, d.provider, d.upstream_model)
        target = self._known.get(key)
        if target is None:
            target = self._known[key] = self._build(d)
        return target

    def _build(self, d: Deployment) -> Target:
        provider = self.config.providers.get(d.provider)
        if provider is None:
            raise DeadLetter(
                f"plan names provider {d.provider!r}, which this executor's configuration does not have"
            )
        model = self._catalog.get(d.alias)
        dep = (
            None
            if model is None
            else next(
                (x for x in model.deployments if x.provider == d.provider and x.model == d.upstream_model),
                None,
            )
        )
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
            retries=model.retries if model is not None else None,
            breaker=model.breaker if model is not None else None,
            documents=model.documents if model is not None else None,
        )

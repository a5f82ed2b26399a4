"""The model catalog as callers see it: one function, used by the router's ``models.list``
and by the edge's ``/v1/models``, so both answer the same thing.

A tenant sees only the aliases it may use (``allowed_models``, minus those disabled by policy).
``usable`` says whether a deployment may be called now: ``health`` (deployment label
``alias/provider`` -> usable) comes from what the caller has observed; unknown means usable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from services.contracts.events import DeploymentInfo, ModelFilter, ModelInfo

from .config import GatewayConfig, ModelConfig

#: label -> (usable, moving average of time to first token in ms or None)
Health = Callable[[str], tuple[bool, float | None]]


def _healthy(label: str) -> tuple[bool, float | None]:
    return True, None


def visible_aliases(config: GatewayConfig, tenant_id: str) -> list[str]:
    """Aliases the tenant may use, sorted."""
    tenant = config.tenants.get(tenant_id)
    if tenant is None:
        return []
    disabled = set(config.policies.disabled_models)
    return sorted(a for a in config.models if a not in disabled and tenant.allows(a))


def model_info(alias: str, model: ModelConfig, health: Health = _healthy) -> ModelInfo:
    deployments = []
    for d in model.deployments:
        usable, ttft = health(f"{alias}/{d.provider}")
        deployments.append(DeploymentInfo(provider=d.provider, model=d.model, price=d.price, usable=usable,
                                          ttft_ms_avg=ttft))
    return ModelInfo(
        id=alias,
        description=model.description,
        operations=model.operations(),
        capabilities=list(model.capabilities),
        context_window=model.context_window,
        max_output_tokens=model.max_output_tokens,
        routing=model.routing,
        price=model.deployments[0].price,
        usable=any(d.usable for d in deployments),
        deployments=deployments,
    )


def matches(alias: str, model: ModelConfig, f: ModelFilter, kinds: Mapping[str, str]) -> bool:
    if f.model is not None and alias != f.model:
        return False
    if f.capability is not None and f.capability not in model.capabilities:
        return False
    if f.operation is not None and f.operation not in model.operations():
        return False
    if f.provider is not None and not any(
        f.provider in (d.provider, kinds.get(d.provider)) for d in model.deployments
    ):
        return False
    return True


def list_models(
    config: GatewayConfig, tenant_id: str, f: ModelFilter | None = None, health: Health = _healthy
) -> list[ModelInfo]:
    """The tenant's models that pass the filter (``provider`` matches a provider name or kind)."""
    f = f or ModelFilter()
    kinds = {name: p.kind for name, p in config.providers.items()}
    return [
        model_info(a, config.models[a], health)
        for a in visible_aliases(config, tenant_id)
        if matches(a, config.models[a], f, kinds)
    ]

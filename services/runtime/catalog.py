"""The model catalog as callers see it: one function, ``list_models``, behind the router's
``models.list`` (which the edge's ``/v1/models`` sends too, so both answer the same thing).

A tenant sees only the aliases it may use (``allowed_models``, minus those disabled by policy).
An alias's capabilities are its own plus those its deployments add
(``DeploymentConfig.capabilities``): what at least one deployment can do. ``usable`` says
whether a deployment may be called now: ``health`` (alias, provider, upstream model ->
(usable, moving average of time to first token)) comes from what the caller has observed;
without it every deployment is usable and unmeasured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from services.contracts.events import DeploymentInfo, ModelFilter, ModelInfo

from .config import OPERATION_CAPABILITY, GatewayConfig, ModelConfig

#: (alias, provider, upstream model) -> (usable, moving average of time to first token in ms or None)
Health = Callable[[str, str, str], tuple[bool, float | None]]


def _healthy(alias: str, provider: str, model: str) -> tuple[bool, float | None]:
    return True, None


def visible_aliases(
    config: GatewayConfig, tenant_id: str, models: Mapping[str, ModelConfig] | None = None
) -> list[str]:
    """Aliases of ``models`` (default: the file's) the tenant may use, sorted."""
    tenant = config.tenants.get(tenant_id)
    if tenant is None:
        return []
    disabled = set(config.policies.disabled_models)
    return sorted(
        a for a in (config.models if models is None else models) if a not in disabled and tenant.allows(a)
    )


def capabilities(model: ModelConfig) -> list[str]:
    """The alias's capabilities and those its deployments add, in that order."""
    caps: list[str] = list(model.capabilities)
    for d in model.deployments:
        caps += [c for c in d.capabilities or () if c not in caps]
    return caps


def model_info(alias: str, model: ModelConfig, health: Health = _healthy) -> ModelInfo:
    deployments = []
    for d in model.deployments:
        usable, ttft = health(alias, d.provider, d.model)
        deployments.append(
            DeploymentInfo(provider=d.provider, model=d.model, price=d.price, usable=usable, ttft_ms_avg=ttft)
        )
    caps = capabilities(model)
    return ModelInfo(
        id=alias,
        description=model.description,
        operations=[op for op, cap in OPERATION_CAPABILITY.items() if cap in caps],
        capabilities=caps,
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
    caps = capabilities(model) if f.capability is not None or f.operation is not None else ()
    if f.capability is not None and f.capability not in caps:
        return False
    if f.operation is not None and OPERATION_CAPABILITY.get(f.operation) not in caps:
        return False
    if f.provider is not None and not any(
        f.provider in (d.provider, kinds.get(d.provider)) for d in model.deployments
    ):
        return False
    return True


def list_models(
    config: GatewayConfig,
    tenant_id: str,
    f: ModelFilter | None = None,
    health: Health | None = None,
    models: Mapping[str, ModelConfig] | None = None,
) -> list[ModelInfo]:
    """The tenant's models of ``models`` (default: the file's ``models``; the router passes its
    Model Registry's catalog) that pass the filter: ``capability`` (one the alias has),
    ``operation`` (one it serves), ``provider`` (a provider name or kind of one of its
    deployments), ``model`` (this alias only)."""
    f = f or ModelFilter()
    models = config.models if models is None else models
    kinds = {name: p.kind for name, p in config.providers.items()}
    return [
        model_info(a, models[a], health or _healthy)
        for a in visible_aliases(config, tenant_id, models)
        if matches(a, models[a], f, kinds)
    ]

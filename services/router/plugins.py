"""The router's questions to a tenant's own Usage plugin (``tenants.<t>.plugins.usage`` naming an
``llmgw.usage`` entry point): ``check_budget`` at admission, ``report_usage`` at settlement.

* ``check_budget`` runs after the plan (which prices the request: the same ``admission.max_cost``
  the router's own budgets reserve) and before the router's own limits and budgets; a verdict
  with ``allowed`` False refuses the request with ``budget_exceeded`` (402) giving the plugin's
  reason and remaining amount. Exactness under concurrency is then the plugin's: the router
  asks it one request at a time per partition but does not wait for settlement.
* ``report_usage`` gets every ``llm.usage`` record of such a tenant, at least once and in
  partition order: live from the router group's ``llm.usage`` subscription (its offset is
  committed after the call), and after an assignment the records from the group's committed
  offset to the end the rebuild read (the previous owner may not have reported them). It runs
  in the router's fetch loop: a plugin returns quickly (queue internally) and uses
  ``usage.request_id`` to drop a repeat.

The built-in ``s3`` and ``noop`` plugins have no budget opinion: the router never calls them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from services.contracts.errors import BudgetExceeded
from services.contracts.events import ExecutionPlanned, UsageRecorded
from services.runtime.config import ModelConfig
from services.runtime.plugins import UsagePlugin

from .admission import max_cost, prompt_bound

log = logging.getLogger(__name__)


async def check_budget(
    plugin: UsagePlugin, plan: ExecutionPlanned, catalog: Mapping[str, ModelConfig]
) -> None:
    """``BudgetExceeded`` when the tenant's plugin refuses ``plan``'s request."""
    req = plan.request
    cost = max_cost(req, plan, catalog, prompt_bound(req))
    verdict = await plugin.check_budget(req, max_cost_usd=cost)
    if verdict.allowed:
        return
    remaining = verdict.remaining_usd
    left = f"; USD {remaining:.6f} left" if remaining is not None else ""
    raise BudgetExceeded(
        f"{verdict.reason or 'the tenant usage plugin refused the request'}{left};"
        f" this request may cost up to USD {cost:.6f}",
        details={
            "remaining_usd": None if remaining is None else round(remaining, 10),
            "max_cost_usd": round(cost, 10),
            "scope": "plugin",
        },
    )


async def report(plugins: Mapping[str, UsagePlugin], raw: bytes) -> None:
    """Hand one ``llm.usage`` record to its tenant's plugin, if the tenant has one. A record that
    does not parse is skipped (the usage sink dead-letters it); a plugin that raises is logged
    and the record is not retried (the router does not stop admitting for a billing system)."""
    try:
        usage = UsageRecorded.model_validate_json(raw)
    except ValueError:
        return
    plugin = plugins.get(usage.tenant_id)
    if plugin is None:
        return
    try:
        await plugin.report_usage(usage)
    except Exception:
        log.exception(
            "usage plugin of tenant %s failed to take usage of request %s", usage.tenant_id, usage.request_id
        )

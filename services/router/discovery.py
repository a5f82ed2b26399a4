"""``models.list``: the router answers it itself, for the caller's tenant, from the Model
Registry's catalog and its own routing statistics (``usable``, ``ttft_ms_avg`` per
deployment). The edge's ``GET /v1/models`` sends the same request, so both say the same."""

from __future__ import annotations

from collections.abc import Mapping

from services.contracts.errors import ModelNotFound
from services.contracts.events import ModelListOutput, ModelsListRequested, ResultProduced
from services.runtime.catalog import Health, list_models, visible_aliases
from services.runtime.config import GatewayConfig, ModelConfig
from services.runtime.kafka import Publisher
from services.runtime.replies import result_target
from services.runtime.topics import Topics

from .handlers import admit


def models_result(
    config: GatewayConfig,
    req: ModelsListRequested,
    health: Health | None = None,
    catalog: Mapping[str, ModelConfig] | None = None,
) -> ResultProduced:
    """The answer; ``ModelNotFound`` when the filter names one alias the tenant cannot see
    (one it sees but the other filters exclude answers an empty list)."""
    admit(req, config)
    models = list_models(config, req.tenant_id, req.filter, health, models=catalog)
    want = req.filter.model
    if want is not None and not models and want not in visible_aliases(config, req.tenant_id, catalog):
        raise ModelNotFound(f"model {want!r} does not exist or is not available to you", param="model")
    return ResultProduced(
        request_id=req.request_id,
        tenant_id=req.tenant_id,
        user_id=req.user_id,
        status="ok",
        operation="models.list",
        output=ModelListOutput(models=models),
    )


async def answer_models(
    publisher: Publisher,
    topics: Topics,
    config: GatewayConfig,
    req: ModelsListRequested,
    health: Health | None = None,
    catalog: Mapping[str, ModelConfig] | None = None,
) -> None:
    topic, partition = result_target(req, topics)
    fut = await publisher.publish(
        topic, models_result(config, req, health, catalog), key=req.request_id, partition=partition
    )
    await fut

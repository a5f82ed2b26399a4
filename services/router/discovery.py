"""``models.list``: the router answers it itself, from the catalog, for the caller's tenant."""

from __future__ import annotations

from services.contracts.errors import ModelNotFound
from services.contracts.events import ModelListOutput, ModelsListRequested, ResultProduced
from services.runtime.catalog import Health, list_models
from services.runtime.config import GatewayConfig
from services.runtime.kafka import Publisher
from services.runtime.replies import result_target
from services.runtime.topics import Topics

from .handlers import admit


def models_result(config: GatewayConfig, req: ModelsListRequested, health: Health | None = None) -> ResultProduced:
    """The answer; ``ModelNotFound`` when the filter names one alias the tenant cannot see."""
    admit(req, config)
    models = list_models(config, req.tenant_id, req.filter, *([health] if health else []))
    if req.filter.model is not None and not models:
        raise ModelNotFound(f"model {req.filter.model!r} does not exist or is not available to you", param="model")
    return ResultProduced(
        request_id=req.request_id,
        tenant_id=req.tenant_id,
        user_id=req.user_id,
        status="ok",
        operation="models.list",
        output=ModelListOutput(models=models),
    )


async def answer_models(
    publisher: Publisher, topics: Topics, config: GatewayConfig, req: ModelsListRequested, health: Health | None = None
) -> None:
    topic, partition = result_target(req, topics)
    fut = await publisher.publish(topic, models_result(config, req, health), key=req.request_id, partition=partition)
    await fut

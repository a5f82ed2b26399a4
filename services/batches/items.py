"""The batch service's table of batch items, read from ``llm.jobs``.

Every item of a batch is a job (job id ``<batch id>.<index>``, ``JobUpdated.batch`` set); a
batch sent to a provider's batch API also has its run's job (``<batch id>.run``). This table keeps
only what driving a batch needs: per batch, each item's outcome (or that it has started), the
counts by outcome, and the run's state. State: in memory, rebuilt from the whole compacted
``llm.jobs`` at start (``start()`` returns once it has read what the topic held).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pydantic
from aiokafka.structs import ConsumerRecord

from services.contracts.events import BatchCounts, ErrorInfo, JobUpdated
from services.runtime.batches import ItemStatus, item_outcome
from services.runtime.kafka import validation_reason
from services.runtime.tail import Malformed, Tail
from services.runtime.topics import Topics

#: An item's place in the table: its outcome, or ``STARTED`` while its job runs.
STARTED = "started"
RUN_SUFFIX = ".run"


@dataclass
class BatchItems:
    """One batch's items as ``llm.jobs`` has them."""

    states: dict[int, str] = field(default_factory=dict)  # index -> STARTED or an ItemStatus
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0
    run_status: str | None = None  # the batch.run job's status (the provider path)
    run_error: ErrorInfo | None = None

    @property
    def ended(self) -> int:
        return self.succeeded + self.errored + self.canceled + self.expired

    @property
    def running(self) -> int:
        return len(self.states) - self.ended

    def record(self, index: int, outcome: ItemStatus | None) -> bool:
        """Take an item's state in; True when it changed (an outcome is final)."""
        old = self.states.get(index)
        if old is not None and old != STARTED:
            return False
        if outcome is None:
            if old is None:
                self.states[index] = STARTED
                return True
            return False
        self.states[index] = outcome
        setattr(self, outcome, getattr(self, outcome) + 1)
        return True

    def counts(self, total: int, rest: ItemStatus | None = None) -> BatchCounts:
        """The counts; with ``rest``, every item without an outcome counted as ``rest``."""
        c = BatchCounts(
            total=total,
            succeeded=self.succeeded,
            errored=self.errored,
            canceled=self.canceled,
            expired=self.expired,
        )
        if rest is not None:
            left = total - self.ended
            setattr(c, rest, getattr(c, rest) + left)
        return c


class ItemsTable:
    """Per ``(tenant, batch id)``, its items' states; ``on_change(tenant, batch_id)`` after each
    record that changed one."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Topics,
        *,
        client_id: str = "llmgw-batches-items",
        on_change: Callable[[str, str], None] | None = None,
    ):
        self._items: dict[tuple[str, str], BatchItems] = {}
        self._on_change = on_change
        spec = topics.jobs
        self._tail = Tail(
            bootstrap_servers,
            spec.name,
            self._on_record,
            partitions=range(spec.partitions),
            start_at="beginning",
            client_id=client_id,
            fetch_max_wait_ms=500,  # an idle poll this often; records are read as they come
        )

    async def start(self) -> None:
        await self._tail.start()
        await self._tail.caught_up()

    async def caught_up(self) -> None:
        await self._tail.caught_up()

    async def aclose(self) -> None:
        await self._tail.aclose()

    def of(self, tenant_id: str, batch_id: str) -> BatchItems:
        return self._items.setdefault((tenant_id, batch_id), BatchItems())

    def forget(self, tenant_id: str, batch_id: str) -> None:
        self._items.pop((tenant_id, batch_id), None)

    def _on_record(self, record: ConsumerRecord) -> None:
        if record.value is None:
            return
        if b'"batch"' not in record.value and b'"batch.run"' not in record.value:
            return  # neither an item nor a run: not read further
        try:
            job = JobUpdated.model_validate_json(record.value)
        except pydantic.ValidationError as exc:
            raise Malformed(f"JobUpdated: {validation_reason(exc)}") from exc
        self.apply(job)

    def apply(self, job: JobUpdated) -> None:
        if job.batch is not None:
            items = self.of(job.tenant_id, job.batch.batch_id)
            changed = items.record(job.batch.index, item_outcome(job))
            batch_id = job.batch.batch_id
        elif job.operation == "batch.run" and job.job_id.endswith(RUN_SUFFIX):
            batch_id = job.job_id[: -len(RUN_SUFFIX)]
            items = self.of(job.tenant_id, batch_id)
            if items.run_status in ("completed", "failed", "cancelled"):
                return
            changed = items.run_status != job.status
            items.run_status, items.run_error = job.status, job.error
        else:
            return
        if changed and self._on_change is not None:
            self._on_change(job.tenant_id, batch_id)

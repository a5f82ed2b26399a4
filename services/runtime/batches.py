"""Batches (issue 13, item 5): the one batch state machine both batch APIs (OpenAI's Batch API,
Anthropic's Message Batches) are meant to run over, and the validation of a batch's JSONL input.

The state machine and the input's validation are pure; ``BatchesView`` reads ``llm.batches``.
A batch moves ``validating -> in_progress -> finalizing -> completed``, or to
``failed`` (its input was refused) or ``expired`` (its completion window passed), or through
``cancelling`` to ``cancelled``; its items end ``succeeded``, ``errored``, ``canceled`` (never
started when the batch was cancelled) or ``expired`` (not finished within the window). Results
are matched to their lines by ``custom_id``, unique within a batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import pydantic
from aiokafka.structs import ConsumerRecord

from services.contracts.errors import BatchNotFound
from services.contracts.events import (
    BatchCounts,
    BatchStatus,
    BatchUpdated,
    JobUpdated,
    RequestBase,
    new_id,
    utcnow,
)

from .kafka import validation_reason
from .tail import Malformed, Tail
from .topics import Topics

ItemStatus = Literal["succeeded", "errored", "canceled", "expired"]

TERMINAL_BATCH_STATES: frozenset[str] = frozenset({"completed", "failed", "expired", "cancelled"})
#: Where each state may go next (a state also "moves" to itself: a repeated record is harmless).
TRANSITIONS: dict[str, frozenset[str]] = {
    "validating": frozenset({"in_progress", "failed", "cancelling"}),
    "in_progress": frozenset({"finalizing", "expired", "cancelling"}),
    "finalizing": frozenset({"completed", "expired"}),
    "cancelling": frozenset({"cancelled"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "expired": frozenset(),
    "cancelled": frozenset(),
}
#: The endpoints a batch's lines may call.
ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/embeddings"})
#: A custom_id's longest length (Anthropic's limit; OpenAI's is not stated).
MAX_CUSTOM_ID = 64


class InvalidTransition(ValueError):
    """A batch was asked to move to a state its current one cannot reach."""


def can_move(old: str, new: str) -> bool:
    return old == new or new in TRANSITIONS[old]


@dataclass
class RequestCounts:
    """OpenAI's ``request_counts`` (total, completed, failed) and Anthropic's per-outcome counts."""

    total: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0

    @property
    def ended(self) -> int:
        return self.succeeded + self.errored + self.canceled + self.expired

    @property
    def processing(self) -> int:
        return self.total - self.ended

    def openai(self) -> dict[str, int]:
        """OpenAI counts canceled and expired items as failed."""
        return {
            "total": self.total,
            "completed": self.succeeded,
            "failed": self.total - self.succeeded - self.processing,
        }

    def anthropic(self) -> dict[str, int]:
        return {
            "processing": self.processing,
            "succeeded": self.succeeded,
            "errored": self.errored,
            "canceled": self.canceled,
            "expired": self.expired,
        }


@dataclass
class BatchState:
    """A batch's state and its items' outcomes, by ``custom_id``. ``move`` is the only way the
    status changes; ``finish_item`` records an item once (a redelivered outcome changes nothing)."""

    custom_ids: list[str]
    status: BatchStatus = "validating"
    items: dict[str, ItemStatus] = field(default_factory=dict)
    custom_ids_set: frozenset[str] = field(init=False, default=frozenset())

    @property
    def counts(self) -> RequestCounts:
        c = RequestCounts(total=len(self.custom_ids))
        for s in self.items.values():
            setattr(c, s, getattr(c, s) + 1)
        return c

    def move(self, new: BatchStatus) -> None:
        if not can_move(self.status, new):
            raise InvalidTransition(f"a batch {self.status} cannot become {new}")
        self.status = new

    def finish_item(self, custom_id: str, outcome: ItemStatus) -> bool:
        """Record an item's outcome; False when it had one already or is not in the batch."""
        if custom_id not in self.custom_ids_set or custom_id in self.items:
            return False
        if self.status in TERMINAL_BATCH_STATES:
            raise InvalidTransition(f"a batch {self.status} takes no more item outcomes")
        self.items[custom_id] = outcome
        return True

    def __post_init__(self) -> None:
        self.custom_ids_set = frozenset(self.custom_ids)

    def pending(self) -> list[str]:
        """Items with no outcome yet, in input order."""
        return [c for c in self.custom_ids if c not in self.items]

    def cancel(self) -> None:
        """``cancelling``: what has not started is never started (``stop_unstarted``)."""
        self.move("cancelling")

    def stop_unstarted(self, started: set[str], outcome: ItemStatus) -> list[str]:
        """Mark every item not started and without an outcome ``outcome`` (``canceled`` after a
        cancel, ``expired`` past the window): the custom_ids marked."""
        marked = [c for c in self.pending() if c not in started]
        for c in marked:
            self.items[c] = outcome
        return marked

    def settle(self) -> BatchStatus | None:
        """The next state once every item has an outcome: ``finalizing`` from ``in_progress``,
        ``cancelled`` from ``cancelling``, ``completed`` from ``finalizing``; None while items run."""
        if self.counts.processing:
            return None
        nxt: dict[str, BatchStatus] = {
            "in_progress": "finalizing",
            "finalizing": "completed",
            "cancelling": "cancelled",
        }
        new = nxt.get(self.status)
        if new is not None:
            self.move(new)
        return new


# --- JSONL input (OpenAI's Batch API) ---------------------------------------------------------


@dataclass(frozen=True)
class BatchLine:
    line: int  # 1-based, as OpenAI's errors number them
    custom_id: str
    method: str
    url: str
    body: dict[str, Any]


@dataclass(frozen=True)
class LineError:
    """One entry of OpenAI's ``errors.data``: ``{code, line, message, param}``."""

    code: str
    line: int | None
    message: str
    param: str | None = None

    def json(self) -> dict[str, Any]:
        return {"code": self.code, "line": self.line, "message": self.message, "param": self.param}


class BatchInputInvalid(ValueError):
    """The input file was refused: every error found, line by line (at most ``MAX_ERRORS``)."""

    def __init__(self, errors: list[LineError]):
        self.errors = errors
        first = errors[0]
        where = f"line {first.line}: " if first.line is not None else ""
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{where}{first.message}{more}")


MAX_ERRORS = 100


def parse_jsonl(data: bytes, endpoint: str, *, max_lines: int = 50_000) -> list[BatchLine]:
    """The lines of a batch input file for ``endpoint``, or ``BatchInputInvalid`` naming each bad
    line: every line a JSON object ``{custom_id, method: "POST", url: endpoint, body: {model, ...}}``,
    ``custom_id`` a non-empty string unique in the file; blank lines are skipped."""
    if endpoint not in ENDPOINTS:
        raise BatchInputInvalid(
            [
                LineError(
                    "invalid_endpoint",
                    None,
                    f"endpoint must be one of {', '.join(sorted(ENDPOINTS))}",
                    "endpoint",
                )
            ]
        )
    errors: list[LineError] = []
    lines: list[BatchLine] = []
    seen: set[str] = set()
    for n, raw in enumerate(data.splitlines(), start=1):
        if len(errors) >= MAX_ERRORS:
            break
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            errors.append(LineError("invalid_json_line", n, "this line is not valid JSON"))
            continue
        bad = _line_error(obj, n, endpoint, seen)
        if bad is not None:
            errors.append(bad)
            continue
        seen.add(obj["custom_id"])
        lines.append(BatchLine(n, obj["custom_id"], obj["method"], obj["url"], obj["body"]))
    if not errors and not lines:
        errors.append(LineError("empty_file", None, "the input file has no requests"))
    if not errors and len(lines) > max_lines:
        errors.append(
            LineError("too_many_requests", None, f"at most {max_lines} requests per batch, got {len(lines)}")
        )
    if errors:
        raise BatchInputInvalid(errors)
    return lines


def _line_error(obj: Any, n: int, endpoint: str, seen: set[str]) -> LineError | None:
    if not isinstance(obj, dict):
        return LineError("invalid_request", n, "each line must be a JSON object")
    cid = obj.get("custom_id")
    if not isinstance(cid, str) or not cid:
        return LineError(
            "missing_required_parameter", n, "custom_id: required, a non-empty string", "custom_id"
        )
    if len(cid) > MAX_CUSTOM_ID:
        return LineError("invalid_value", n, f"custom_id: at most {MAX_CUSTOM_ID} characters", "custom_id")
    if cid in seen:
        return LineError(
            "duplicate_custom_id", n, f"custom_id {cid!r} is used by an earlier line", "custom_id"
        )
    if obj.get("method") != "POST":
        return LineError("invalid_value", n, f"method: must be 'POST', got {obj.get('method')!r}", "method")
    if obj.get("url") != endpoint:
        return LineError(
            "mismatched_endpoint",
            n,
            f"url: must be the batch's endpoint {endpoint!r}, got {obj.get('url')!r}",
            "url",
        )
    body = obj.get("body")
    if not isinstance(body, dict):
        return LineError("missing_required_parameter", n, "body: required, a JSON object", "body")
    if not isinstance(body.get("model"), str) or not body["model"]:
        return LineError(
            "missing_required_parameter", n, "body.model: required, a non-empty string", "body.model"
        )
    if body.get("stream"):
        return LineError("invalid_value", n, "body.stream: batch requests cannot stream", "body.stream")
    return None


# --- batch records on llm.batches, and the view readers keep of them ---------------------------

#: How far along each state is: a record of a lower rank than the view's never replaces it.
#: ``cancelling`` and ``finalizing`` share a rank: whichever came first stands.
STATE_RANK: dict[str, int] = {
    "validating": 0,
    "in_progress": 1,
    "cancelling": 2,
    "finalizing": 2,
    "completed": 3,
    "failed": 3,
    "expired": 3,
    "cancelled": 3,
}
#: Each state's timestamp field on ``BatchUpdated``.
STAMPS: dict[str, str] = {
    "in_progress": "in_progress_at",
    "finalizing": "finalizing_at",
    "completed": "completed_at",
    "failed": "failed_at",
    "expired": "expired_at",
    "cancelling": "cancelling_at",
    "cancelled": "cancelled_at",
}


def batch_key(batch: BatchUpdated) -> str:
    """The record key of a batch on ``llm.batches``: ``<tenant>/<batch id>``."""
    return f"{batch.tenant_id}/{batch.batch_id}"


def item_id(batch_id: str, index: int) -> str:
    """The request id (and job id) of a batch's ``index``-th line."""
    return f"{batch_id}.{index}"


def run_id(batch_id: str) -> str:
    """The request id of a batch's ``batch.run`` (the provider path)."""
    return f"{batch_id}.run"


def output_file_id(batch_id: str) -> str:
    """The id of a batch's output file (its succeeded lines), readable while it runs."""
    return f"file-{batch_id}-output"


def error_file_id(batch_id: str) -> str:
    """The id of a batch's error file (its errored, canceled and expired lines)."""
    return f"file-{batch_id}-errors"


def batch_of_file(file_id: str) -> tuple[str, str] | None:
    """``(batch id, "output" | "errors")`` for a batch's result file id, else None."""
    if not file_id.startswith("file-"):
        return None
    rest = file_id[len("file-") :]
    for kind in ("output", "errors"):
        if rest.endswith("-" + kind) and len(rest) > len(kind) + 1:
            return rest[: -len(kind) - 1], kind
    return None


def foreign_item(item: RequestBase, tenant_id: str, batch_id: str, index: int) -> str | None:
    """Why ``item`` is not line ``index`` of ``tenant_id``'s batch ``batch_id`` (None: it is).
    Whoever runs a batch's lines checks each: a batch record names its lines' object, and nothing
    read from an event may run another tenant's requests."""
    if item.tenant_id != tenant_id:
        return "is another tenant's"
    if item.batch is None or item.batch.batch_id != batch_id or item.batch.index != index:
        return f"is not item {index} of batch {batch_id}"
    if item.request_id != item_id(batch_id, index):
        return f"has request id {item.request_id!r}, not {item_id(batch_id, index)!r}"
    return None


def newer(old: BatchUpdated | None, new: BatchUpdated) -> BatchUpdated | None:
    """What the view holds once ``new`` is read after ``old``: None when ``new`` changes nothing.
    A terminal batch never changes; a record of a lower state rank keeps the view's state (a count
    written while a cancel was on its way): its counts still count, if higher."""
    if old is None:
        return new
    if old.status in TERMINAL_BATCH_STATES:
        return None
    if STATE_RANK[new.status] < STATE_RANK[old.status] or (
        STATE_RANK[new.status] == STATE_RANK[old.status] and new.status != old.status
    ):
        if _ended(new.counts) <= _ended(old.counts):
            return None
        return old.model_copy(update={"counts": new.counts, "occurred_at": new.occurred_at})
    keep = {f: getattr(old, f) for f in STAMPS.values() if getattr(new, f) is None and getattr(old, f)}
    if new.path is None and old.path is not None:
        keep["path"] = old.path
    if new.run_id is None and old.run_id is not None:
        keep["run_id"] = old.run_id
    if _ended(new.counts) < _ended(old.counts):
        keep["counts"] = old.counts
    return new.model_copy(update=keep) if keep else new


def _ended(c: BatchCounts) -> int:
    return c.succeeded + c.errored + c.canceled + c.expired


def moved(batch: BatchUpdated, status: BatchStatus, **changes: Any) -> BatchUpdated:
    """``batch`` in ``status`` (its timestamp set now), a new record (``InvalidTransition`` if
    the state machine forbids it)."""
    if not can_move(batch.status, status):
        raise InvalidTransition(f"a batch {batch.status} cannot become {status}")
    now = utcnow()
    update: dict[str, Any] = {"status": status, "occurred_at": now, "event_id": new_id(), **changes}
    stamp = STAMPS.get(status)
    if stamp and getattr(batch, stamp) is None:
        update[stamp] = now
    return batch.model_copy(update=update)


def item_outcome(job: JobUpdated) -> ItemStatus | None:
    """A batch item's outcome from its job's record; None while it runs."""
    if job.status == "completed":
        return "succeeded"
    if job.status == "cancelled":
        return "canceled"
    if job.status == "failed":
        return "expired" if job.error is not None and job.error.code == "batch_expired" else "errored"
    return None


def stop_outcome(status: str) -> ItemStatus:
    """The outcome of an item that never ran in a batch ended ``status``."""
    return "expired" if status == "expired" else "canceled" if status == "cancelled" else "errored"


class BatchesView:
    """Every batch on ``llm.batches``, by tenant and id, as this process has read them. Rebuilt
    from the whole compacted topic at start (``start()`` returns once it has read what the topic
    held), then followed. State: that table, in memory, rebuilt from ``llm.batches`` after a
    restart. ``on_change`` runs for each batch record that changed the table."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Topics,
        *,
        client_id: str = "llmgw-batches-view",
        on_change: Callable[[BatchUpdated, int], None] | None = None,
    ):
        self._batches: dict[tuple[str, str], BatchUpdated] = {}
        self.partition_of: dict[tuple[str, str], int] = {}
        self._on_change = on_change
        spec = topics.batches
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

    async def aclose(self) -> None:
        await self._tail.aclose()

    async def caught_up(self) -> None:
        """Every record published before this call has been read (a read-your-writes barrier)."""
        await self._tail.caught_up()

    def _on_record(self, record: ConsumerRecord) -> None:
        if record.value is None:  # a tombstone: "<tenant>/<batch id>"
            tenant, _, batch_id = (record.key or b"").decode().partition("/")
            self._batches.pop((tenant, batch_id), None)
            return
        try:
            batch = BatchUpdated.model_validate_json(record.value)
        except pydantic.ValidationError as exc:
            raise Malformed(f"BatchUpdated: {validation_reason(exc)}") from exc
        self.apply(batch, record.partition)

    def apply(self, batch: BatchUpdated, partition: int | None = None) -> BatchUpdated | None:
        """Take ``batch`` in (``newer``); the view's record of it when that changed, else None."""
        key = (batch.tenant_id, batch.batch_id)
        merged = newer(self._batches.get(key), batch)
        if merged is None:
            return None
        self._batches[key] = merged
        if partition is not None:
            self.partition_of[key] = partition
        if self._on_change is not None:
            self._on_change(merged, self.partition_of.get(key, -1))
        return merged

    def get(self, tenant_id: str, batch_id: str) -> BatchUpdated:
        """The batch of ``tenant_id`` with this id, else ``BatchNotFound`` (another tenant's batch
        of that id is not told apart from none)."""
        batch = self._batches.get((tenant_id, batch_id))
        if batch is None:
            raise BatchNotFound(f"no batch {batch_id!r}")
        return batch

    def peek(self, tenant_id: str, batch_id: str) -> BatchUpdated | None:
        return self._batches.get((tenant_id, batch_id))

    def batches(self, tenant_id: str | None = None, status: str | None = None) -> list[BatchUpdated]:
        """The batches known, newest first, of one tenant and status when given."""
        out = [
            b
            for b in self._batches.values()
            if (tenant_id is None or b.tenant_id == tenant_id) and (status is None or b.status == status)
        ]
        return sorted(out, key=lambda b: b.created_at, reverse=True)

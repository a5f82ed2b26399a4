"""Batches (issue 13, item 5): the one batch state machine both batch APIs (OpenAI's Batch API,
Anthropic's Message Batches) are meant to run over, and the validation of a batch's JSONL input.

Pure: no I/O. A batch moves ``validating -> in_progress -> finalizing -> completed``, or to
``failed`` (its input was refused) or ``expired`` (its completion window passed), or through
``cancelling`` to ``cancelled``; its items end ``succeeded``, ``errored``, ``canceled`` (never
started when the batch was cancelled) or ``expired`` (not finished within the window). Results
are matched to their lines by ``custom_id``, unique within a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

BatchStatus = Literal[
    "validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled"
]
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

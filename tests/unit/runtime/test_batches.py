"""The batch state machine and the batch JSONL validation (services/runtime/batches.py)."""

from __future__ import annotations

import orjson
import pytest

from services.runtime.batches import (
    TRANSITIONS,
    BatchInputInvalid,
    BatchState,
    InvalidTransition,
    can_move,
    parse_jsonl,
)

CHAT = "/v1/chat/completions"


def line(cid: str, **over: object) -> bytes:
    obj: dict[str, object] = {
        "custom_id": cid,
        "method": "POST",
        "url": CHAT,
        "body": {"model": "demo-openai", "messages": [{"role": "user", "content": cid}]},
    }
    obj.update(over)
    return orjson.dumps(obj)


def test_a_batch_runs_validating_in_progress_finalizing_completed() -> None:
    b = BatchState(["a", "b"])
    b.move("in_progress")
    assert b.finish_item("a", "succeeded") and b.settle() is None
    assert b.finish_item("b", "errored")
    assert not b.finish_item("b", "succeeded")  # a redelivered outcome changes nothing
    assert not b.finish_item("zzz", "succeeded")
    assert b.settle() == "finalizing" and b.settle() == "completed"
    assert b.counts.openai() == {"total": 2, "completed": 1, "failed": 1}
    with pytest.raises(InvalidTransition):
        b.move("in_progress")


def test_cancelling_stops_what_has_not_started_and_waits_for_the_rest() -> None:
    b = BatchState(["a", "b", "c", "d"])
    b.move("in_progress")
    b.finish_item("a", "succeeded")
    b.cancel()
    assert b.stop_unstarted(started={"b"}, outcome="canceled") == ["c", "d"]
    assert b.settle() is None  # b is still running
    b.finish_item("b", "succeeded")
    assert b.settle() == "cancelled"
    assert b.counts.anthropic() == {
        "processing": 0,
        "succeeded": 2,
        "errored": 0,
        "canceled": 2,
        "expired": 0,
    }


def test_expiry_marks_the_unfinished_items_expired() -> None:
    b = BatchState(["a", "b"])
    b.move("in_progress")
    b.finish_item("a", "succeeded")
    b.move("expired")
    assert b.stop_unstarted(set(), "expired") == ["b"]
    assert b.counts.openai() == {"total": 2, "completed": 1, "failed": 1}


def test_failed_is_reached_only_from_validating_and_terminal_states_are_final() -> None:
    assert can_move("validating", "failed") and not can_move("in_progress", "failed")
    assert not can_move("cancelling", "completed") and can_move("cancelling", "cancelled")
    for end in ("completed", "failed", "expired", "cancelled"):
        assert TRANSITIONS[end] == frozenset()


def test_valid_lines_are_parsed_in_order_and_blank_lines_skipped() -> None:
    lines = parse_jsonl(line("x") + b"\n\n" + line("y") + b"\n", CHAT)
    assert [(item.line, item.custom_id) for item in lines] == [(1, "x"), (3, "y")]


@pytest.mark.parametrize(
    ("bad", "code", "param"),
    [
        (b"{not json", "invalid_json_line", None),
        (line("a"), "duplicate_custom_id", "custom_id"),
        (
            line(
                "",
            ),
            "missing_required_parameter",
            "custom_id",
        ),
        (line("b", method="GET"), "invalid_value", "method"),
        (line("b", url="/v1/embeddings"), "mismatched_endpoint", "url"),
        (line("b", body={"messages": []}), "missing_required_parameter", "body.model"),
        (line("b", body={"model": "m", "stream": True}), "invalid_value", "body.stream"),
        (b"[1, 2]", "invalid_request", None),
    ],
)
def test_each_bad_line_is_named_with_its_number(bad: bytes, code: str, param: str | None) -> None:
    with pytest.raises(BatchInputInvalid) as err:
        parse_jsonl(line("a") + b"\n" + bad + b"\n", CHAT)
    [e] = err.value.errors
    assert (e.code, e.line, e.param) == (code, 2, param)
    assert "line 2" in str(err.value)


def test_an_empty_file_and_an_unknown_endpoint_are_refused() -> None:
    with pytest.raises(BatchInputInvalid, match="no requests"):
        parse_jsonl(b"\n", CHAT)
    with pytest.raises(BatchInputInvalid, match="endpoint must be one of"):
        parse_jsonl(line("a"), "/v1/images/generations")

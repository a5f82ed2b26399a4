"""The hash chain, pure: links, and what ``check`` names when a chain was tampered with."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from services.audit_sink.chain import GENESIS, Entry, Head, canonical, check, digest, link, parse_line


def event(i: int, tenant: str = "demo") -> dict:
    return {
        "type": "llm.audit.v1",
        "event_id": f"e{i}",
        "request_id": f"r{i}",
        "tenant_id": tenant,
        "occurred_at": "2025-06-01T10:00:00Z",
        "action": "completed",
        "actor": "executor",
    }


def build(n: int) -> tuple[list[bytes], Head]:
    head, lines = Head(), []
    for i in range(n):
        line, head = link(head, event(i), topic="llm.audit", partition=2, offset=100 + i)
        lines.append(line)
    return lines, head


def entries(lines: list[bytes]) -> list[Entry]:
    return [parse_line(line, f"obj:{n}") for n, line in enumerate(lines, 1)]


def test_each_record_carries_the_hash_of_the_one_before_over_its_canonical_json():
    lines, head = build(3)
    recs = [orjson.loads(x) for x in lines]
    assert recs[0]["chain"] == {
        "topic": "llm.audit",
        "partition": 2,
        "offset": 100,
        "seq": 0,
        "prev": GENESIS,
    }
    for before, after in zip(recs, recs[1:], strict=False):
        body = {k: v for k, v in before.items() if k != "hash"}  # the record with its own prev hash
        expected = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        assert after["chain"]["prev"] == before["hash"] == expected
    assert lines[0] == canonical(recs[0])  # stored canonical: sorted keys, no whitespace
    assert head == Head(2, recs[2]["hash"], 102)
    assert digest(recs[2]) == head.hash


def test_an_intact_chain_passes_also_with_a_lagging_head():
    lines, head = build(5)
    assert check("c", entries(lines), head) is None
    assert (
        check("c", entries(lines), Head(2, orjson.loads(lines[2])["hash"], 102)) is None
    )  # head written late
    assert check("c", entries(lines), None) is None
    assert check("c", [], None) is None


def tamper(line: bytes, **event_changes) -> bytes:
    rec = orjson.loads(line)
    rec["event"].update(event_changes)
    return canonical(rec)


def rehash(line: bytes, **event_changes) -> bytes:
    """A careful forger: changes the event and recomputes the record's own hash."""
    rec = orjson.loads(line)
    rec["event"].update(event_changes)
    rec["hash"] = digest(rec)
    return canonical(rec)


def test_a_modified_record_is_named():
    lines, head = build(5)
    lines[2] = tamper(lines[2], tenant_id="other")
    f = check("c", entries(lines), head)
    assert (
        f.kind == "modified" and "seq 2 " in f.message and "event_id e2" in f.message and "obj:3" in f.message
    )


def test_a_modified_record_with_its_hash_recomputed_is_named_by_the_next_link():
    lines, head = build(5)
    lines[1] = rehash(lines[1], action="failed")
    f = check("c", entries(lines), head)
    assert f.kind == "modified" and "seq 1 " in f.message and "next record" in f.message


def test_a_modified_last_record_is_caught_by_the_head():
    lines, head = build(4)
    lines[3] = rehash(lines[3], actor="someone")
    assert check("c", entries(lines), None) is None  # the chain alone cannot see it: the head can
    f = check("c", entries(lines), head)
    assert f.kind == "modified" and "seq 3 " in f.message and "head" in f.message


def test_a_record_whose_seq_was_changed_is_modified():
    lines, head = build(4)
    rec = orjson.loads(lines[2])
    rec["chain"]["seq"] = 7
    rec["hash"] = digest(rec)
    f = check("c", entries(lines[:2] + [canonical(rec)] + lines[3:]), head)
    assert f.kind == "modified" and "seq 7 " in f.message


@pytest.mark.parametrize("gone", [0, 2])
def test_a_removed_record_is_named_by_its_seq(gone):
    lines, head = build(5)
    del lines[gone]
    f = check("c", entries(lines), head)
    assert f.kind == "removed" and f"record seq {gone} was removed" in f.message


def test_removed_newest_records_are_caught_by_the_head():
    lines, head = build(5)
    f = check("c", entries(lines[:3]), head)
    assert f.kind == "removed" and "seq 3..4" in f.message


def test_swapped_records_are_reordered():
    lines, head = build(5)
    lines[1], lines[3] = lines[3], lines[1]
    f = check("c", entries(lines), head)
    assert f.kind == "reordered" and "seq 3 " in f.message and "seq 1 belongs here" in f.message


def test_a_line_that_is_not_a_record_is_modified():
    lines, head = build(3)
    lines[1] = b'{"chain": "gone"'
    f = check("c", entries(lines), head)
    assert f.kind == "modified" and "obj:2" in f.message

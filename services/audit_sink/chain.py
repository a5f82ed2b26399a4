"""The audit hash chain (pure): how a record is linked to the one before it, and how a chain
read back from storage is checked.

One chain per source partition. A stored record is one line of canonical JSON (keys sorted,
no whitespace, UTF-8):

    {"chain": {"offset", "partition", "prev", "seq", "topic"}, "event": {...}, "hash": "<hex>"}

``seq`` counts the partition's records from 0 without gaps; ``prev`` is the ``hash`` of the
record before (64 zeros for seq 0); ``hash`` is the SHA-256 of the canonical JSON of the record
without ``hash`` (so it covers ``prev``: each record vouches for the whole chain before it).
The chain's head (last seq and hash) is also kept apart, so that changing or dropping the
newest records is seen too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

GENESIS = "0" * 64


def canonical(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def digest(record: dict[str, Any]) -> str:
    """The hash of a stored record: SHA-256 over its canonical JSON, ``hash`` left out."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


@dataclass(frozen=True, slots=True)
class Head:
    """The last record of a chain: its ``seq``, ``hash`` and source ``offset`` (-1, GENESIS, -1: empty)."""

    seq: int = -1
    hash: str = GENESIS
    offset: int = -1

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "offset": self.offset}


def link(head: Head, event: dict[str, Any], *, topic: str, partition: int, offset: int) -> tuple[bytes, Head]:
    """The stored line for ``event`` appended after ``head``, and the chain's new head."""
    record: dict[str, Any] = {
        "chain": {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "seq": head.seq + 1,
            "prev": head.hash,
        },
        "event": event,
    }
    record["hash"] = h = digest(record)
    return canonical(record), Head(head.seq + 1, h, offset)


@dataclass(frozen=True, slots=True)
class Entry:
    """One line read back: the parsed record (None if it is not a record) and where it was."""

    record: dict[str, Any] | None
    where: str  # "<object key>:<line>"

    @property
    def seq(self) -> int | None:
        chain = (self.record or {}).get("chain")
        seq = chain.get("seq") if isinstance(chain, dict) else None
        return seq if isinstance(seq, int) else None

    def describe(self) -> str:
        chain = (self.record or {}).get("chain") or {}
        event = (self.record or {}).get("event") or {}
        return (
            f"seq {chain.get('seq')} (offset {chain.get('offset')}, event_id {event.get('event_id')}, "
            f"tenant {event.get('tenant_id')}) at {self.where}"
        )


def parse_line(line: bytes, where: str) -> Entry:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return Entry(None, where)
    return Entry(record if isinstance(record, dict) else None, where)


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # modified | removed | reordered
    message: str


def check(chain: str, entries: list[Entry], head: Head | None) -> Finding | None:
    """The first record of ``entries`` (storage order) that was modified, removed or reordered,
    judged by the links, the seq numbers and ``head``; None when the chain is intact.

    * modified: a record whose ``hash`` is not the hash of its content, or that no longer has
      the hash the next record (or the head) vouches for, or whose seq alone changed;
    * removed: a seq that appears nowhere (also past the last record when the head is later);
    * reordered: a record found where another seq, stored elsewhere, belongs.
    """
    present = {e.seq for e in entries}
    expected, prev = 0, GENESIS
    for j, e in enumerate(entries):
        rec = e.record
        if rec is None or e.seq is None or not isinstance(rec.get("chain", {}).get("prev"), str):
            return Finding("modified", f"{chain}: the record at {e.where} is not an audit record")
        if rec.get("hash") != digest(rec):
            return Finding(
                "modified",
                f"{chain}: record {e.describe()} was modified (its hash does not match its content)",
            )
        if e.seq == expected and rec["chain"]["prev"] == prev:
            prev, expected = rec["hash"], expected + 1
            continue
        if rec["chain"]["prev"] == prev:
            return Finding(
                "modified",
                f"{chain}: record {e.describe()} was modified (it follows seq {expected - 1} "
                f"but says seq {e.seq})",
            )
        if e.seq == expected:
            culprit = entries[j - 1] if j else e
            return Finding(
                "modified",
                f"{chain}: record {culprit.describe()} was modified (the next record "
                "vouches for another hash)",
            )
        if expected in present:
            return Finding(
                "reordered", f"{chain}: record {e.describe()} is out of order: seq {expected} belongs here"
            )
        after = f"after {entries[j - 1].describe()}" if j else "at the start of the chain"
        return Finding("removed", f"{chain}: record seq {expected} was removed ({after})")
    if head is not None:
        if head.seq >= expected:
            return Finding(
                "removed",
                f"{chain}: records seq {expected}..{head.seq} were removed (the chain's head "
                f"is seq {head.seq}; the last stored record is seq {expected - 1})",
            )
        if (
            head.seq >= 0 and (entries[head.seq].record or {}).get("hash") != head.hash
        ):  # (all records, as checked above)
            return Finding(
                "modified",
                f"{chain}: record {entries[head.seq].describe()} was modified (the chain's "
                "head vouches for another hash)",
            )
    return None

"""Malformed events for every topic a gateway service consumes: bytes that are not JSON, JSON
that is not an object, objects missing what the event needs or holding the wrong types, and
events that are nearly right (one field wrong, an operation nobody knows). Some are shaped to
reach past the first checks: usage records with the alias and provider the routers' statistics
read but a field of the wrong type, records keyed by a governed tenant (the router's ledger
reads them when it rebuilds), requests and plans naming a reply partition (their callers are
told why)."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable, Iterator

import orjson
from aiokafka.partitioner import murmur2

Shape = Callable[[random.Random], bytes]

GOVERNED = (b"limited", b"budgeted")
#: A deployment's key on llm.breakers (``alias/provider/model``): the one whose provider the
#: chaos suite never fails, so a malformed record that opened its circuit would show.
HEALTHY_KEY = b"demo-ollama/emulator-ollama/llama-emu"


def _j(doc: object) -> bytes:
    return orjson.dumps(doc)


def _generic() -> list[Shape]:
    return [
        lambda r: b"",
        lambda r: b"{not json",
        lambda r: os.urandom(r.randint(1, 64)),
        lambda r: b"\xff\xfe\x00garbage",
        lambda r: b"[]",
        lambda r: b"null",
        lambda r: b"42",
        lambda r: b'"a string"',
        lambda r: b'{"type": "llm.unknown.v9"}',
        lambda r: _j({"request_id": r.randint(0, 10**6), "tenant_id": ["x"]}),
        lambda r: b'{"request_id": "x", ' * 50,
    ]


def _request(reply: dict) -> list[Shape]:
    base = {"request_id": "m", "tenant_id": "demo", "user_id": "u", "model": "demo-openai"}
    return [
        lambda r: _j(base | {"messages": []}),
        lambda r: _j(base | {"messages": [{"role": "wizard", "content": "hi"}]}),
        lambda r: _j(base | {"operation": "teleport", "reply_to": reply, "request_id": f"bad-{r.random()}"}),
        lambda r: _j(base | {"messages": "hi", "reply_to": reply, "request_id": f"bad-{r.random()}"}),
        lambda r: _j(base | {"messages": [{"role": "user", "content": "x"}], "stream": "sometimes"}),
        lambda r: _j(base | {"messages": [{"role": "user", "content": "x"}], "reply_to": {"topic": 5}}),
    ]


def _plan(reply: dict) -> list[Shape]:
    req = {
        "request_id": "m",
        "tenant_id": "demo",
        "model": "demo-openai",
        "messages": [{"role": "user", "content": "x"}],
    }
    return [
        lambda r: _j({"type": "llm.exec.v1", "request": req, "deployments": []}),
        lambda r: _j({"type": "llm.exec.v1", "request": req | {"reply_to": reply}, "deployments": "all"}),
        lambda r: _j(
            {
                "type": "llm.exec.v1",
                "request": {"operation": "teleport", "request_id": "z"},
                "deployments": [],
            }
        ),
        lambda r: _j({"request": None}),
    ]


def _usage() -> list[Shape]:
    known = {"alias": "demo-openai", "provider": "emulator-openai", "model": "gpt-emu"}
    return [
        lambda r: _j(known | {"status": "error", "error_code": ["provider_error"]}),  # unhashable
        lambda r: _j(known | {"status": "ok", "failed_attempts": 5, "ttft_ms": "fast"}),
        lambda r: _j(known | {"status": "ok", "streamed": True, "ttft_ms": {"ms": 1}}),
        lambda r: _j(known | {"model": ["gpt-emu"], "status": "ok"}),
        lambda r: _j(
            {"type": "llm.usage.v1", "request_id": "m", "tenant_id": "limited", "total_tokens": "many"}
        ),
        lambda r: _j({"type": "llm.usage.v1", "tenant_id": "budgeted", "cost_usd": "a lot"}),
    ]


def _audit() -> list[Shape]:
    return [
        lambda r: _j({"type": "llm.audit.v1", "action": "exploded", "request_id": "m", "tenant_id": "demo"}),
        lambda r: _j({"type": "llm.audit.v1", "action": "fallback_triggered", "alias": 1, "provider": []}),
    ]


def _control() -> list[Shape]:
    return [
        lambda r: _j({"type": "llm.cancel.v1", "request_id": 7}),
        lambda r: _j({"type": "llm.cancel.v1"}),
    ]


def _admission() -> list[Shape]:
    return [
        lambda r: _j({"type": "llm.admission.v1", "tenant_id": "limited", "request_id": "m"}),  # no times
        lambda r: _j(
            {"type": "llm.admission.v1", "tenant_id": "budgeted", "request_id": "m", "occurred_at": 5}
        ),
    ]


def _snapshot() -> list[Shape]:
    return [lambda r: _j({"type": "llm.ledger.v1", "tenant_id": "limited", "spent": "all of it"})]


def _breaker() -> list[Shape]:
    healthy = {"type": "llm.breaker.v1", "alias": "demo-ollama", "provider": "emulator-ollama"}
    return [
        lambda r: _j(healthy | {"state": "open"}),  # no model, no until: must not open anything
        lambda r: _j(healthy | {"model": "llama-emu", "state": "exploded", "until": "never"}),
    ]


def _reply() -> list[Shape]:
    return [
        lambda r: _j({"type": "llm.result.v1", "request_id": "m", "status": "maybe"}),
        lambda r: _j({"type": "llm.chunk.v1", "request_id": "m", "seq": "first"}),
    ]


def shapes(role: str, reply: dict) -> list[Shape]:
    special = {
        "requests": _request(reply),
        "exec": _plan(reply),
        "usage": _usage(),
        "audit": _audit(),
        "control": _control(),
        "replies": _reply(),
        "admissions": _admission(),
        "ledger": _snapshot(),
        "breakers": _breaker(),
    }[role]
    generic = _generic()
    if role == "breakers":  # compacted: an empty value is a tombstone (a deletion), not malformed
        generic = [g for g in generic if g(random.Random(0)) != b""]
    return generic + special


def events(
    role: str, n: int, partitions: int, reply: dict, seed: int = 14
) -> Iterator[tuple[bytes | None, int, bytes]]:
    """``n`` malformed events for the topic of ``role``: (key, partition, value), cycling through
    its shapes and spreading over its partitions; keys are random, governed tenants' now and then."""
    r = random.Random(f"{seed}-{role}")
    cycle = itertools.cycle(shapes(role, reply))
    for i in range(n):
        if role == "breakers":  # compacted: every record needs a key
            yield (HEALTHY_KEY if i % 2 else os.urandom(4).hex().encode()), 0, next(cycle)(r)
        elif i % 7 == 0 or role in ("admissions", "ledger"):  # a governed tenant's, on its own partition
            key: bytes | None = GOVERNED[i % 2]
            yield key, (murmur2(key) & 0x7FFFFFFF) % partitions, next(cycle)(r)
        else:
            key = None if i % 5 == 0 else os.urandom(4).hex().encode()
            yield key, i % partitions, next(cycle)(r)

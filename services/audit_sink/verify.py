"""``llmgw audit verify``: read every chain of the audit ledger back and check it (``chain.check``).

Every chain is read and checked whole, also with ``tenant``: a chain holds the records of
every tenant of its partition, and a record removed from it may have been that tenant's;
``tenant`` only chooses whose records are counted.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import orjson

from services.runtime.s3 import ObjectStore

from .chain import Entry, Finding, Head, check, parse_line
from .layout import ROOT, chain_prefix, chains, head_key


@dataclass
class Verification:
    records: int = 0  # records checked (of ``tenant`` when given)
    total: int = 0  # records checked, every tenant
    chains: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


class UnreadableHead(ValueError):
    """The chain's head object is not a head (it was changed)."""


async def read_chain(store: ObjectStore, name: str, concurrency: int = 16) -> tuple[list[Entry], Head | None]:
    """The chain's records in storage order and its head (None when there is none yet)."""
    keys = [k for k in await store.keys(chain_prefix(name)) if k.endswith(".ndjson")]
    slots = asyncio.Semaphore(concurrency)

    async def read(key: str) -> bytes:
        async with slots:
            obj = await store.get(key)
        return obj.body if obj else b""

    bodies = await asyncio.gather(*(read(k) for k in keys))
    entries = [
        parse_line(line, f"{key}:{n}")
        for key, body in zip(keys, bodies, strict=True)
        for n, line in enumerate(body.splitlines(), 1)
        if line.strip()
    ]
    obj = await store.get(head_key(name))
    head = None
    if obj is not None:
        try:
            h = orjson.loads(obj.body)
            head = Head(int(h["seq"]), str(h["hash"]), int(h["offset"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise UnreadableHead(f"{name}: its head {head_key(name)} is not readable ({exc})") from exc
    return entries, head


async def verify(store: ObjectStore, tenant: str | None = None) -> Verification:
    result = Verification()
    for name in chains(await store.keys(ROOT)):
        try:
            entries, head = await read_chain(store, name)
        except UnreadableHead as exc:
            result.findings.append(Finding("modified", str(exc)))
            continue
        result.chains += 1
        result.total += len(entries)
        result.records += (
            len(entries)
            if tenant is None
            else sum(1 for e in entries if ((e.record or {}).get("event") or {}).get("tenant_id") == tenant)
        )
        if (finding := check(name, entries, head)) is not None:
            result.findings.append(finding)
    return result

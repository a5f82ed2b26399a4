"""The chaos suite's instruments: a broker it can restart, load with known answers, the books
(``llm.usage``, the usage sink's S3 ledger, ``llm.dlq``) read back, and the table.

Every request the suite sends has its own id and an ``echo`` scenario, so an answer is right
only when its text is exactly the prompt (a stream replayed after a crash shows as a wrong
answer, not as an answer). Per fault the table counts:

* answered: the caller got the right answer; failed explicitly: the caller got an error (a
  gateway error code, an HTTP error status, or a connection the killed edge dropped);
* lost: the caller got nothing before its deadline (the SDK's ``GatewayTimeout``, an HTTP
  read timeout); wrong: an answer whose text is not the prompt;
* billed twice: a request with more than one ``llm.usage`` record, or held more than once in
  the usage sink's S3 ledger;
* DLQ entries: ``llm.dlq`` records that arrived meanwhile, by reason;
* consumers alive: service processes running and members of their groups, of all of them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.cli import infra
from services.cli.stack import Stack
from services.client import GatewayClient
from services.contracts.errors import GatewayError, GatewayTimeout
from services.runtime.s3 import S3ObjectStore

from ..e2e.helpers import TopicTail, group_members

DEADLINE_S = 60.0  # a caller's patience: past it, an unanswered request is lost

#: Service components and the consumer group each is a member of (the edge has none).
GROUPS = {
    "router": "llmgw-router",
    "executor": "llmgw-executor",
    "usage-sink": "llmgw-usage-sink",
    "audit-sink": "llmgw-audit-sink",
}
#: What each group must have read to the end of before the books are read (a topics.yaml role).
GROUP_TOPICS = {
    "llmgw-router": "requests",
    "llmgw-executor": "exec",
    "llmgw-usage-sink": "usage",
    "llmgw-audit-sink": "audit",
}


class Broker:
    """A single-node KRaft broker on fixed ports and a data directory kept across restarts."""

    def __init__(self, state: Path, cache_dir: Path):
        self.state, self.cache_dir = state, cache_dir
        self.port, self.controller = infra.free_port(), infra.free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.restarts = 0

    def start(self) -> None:
        cmd, _ = infra.kafka_command(self.state, self.port, self.controller, self.cache_dir)
        with open(self.state / "kafka.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        infra.wait_port("127.0.0.1", self.port, 120, self.proc, "kafka")
        asyncio.run(_wait_for_metadata(self.bootstrap))

    def stop(self, sig: int = signal.SIGTERM, grace: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()
        self.restarts += 1


async def _wait_for_metadata(bootstrap: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
        finally:
            await admin.close()


# --- the table ------------------------------------------------------------------------------


@dataclass
class Row:
    fault: str
    injected: int = 0
    ids: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    failed: collections.Counter[str] = field(default_factory=collections.Counter)
    lost: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    billed_twice: list[str] = field(default_factory=list)
    unbilled: list[str] = field(default_factory=list)
    ledger_mismatch: list[str] = field(default_factory=list)  # S3 ledger count != llm.usage count
    dlq: collections.Counter[str] = field(default_factory=collections.Counter)
    alive: tuple[int, int] = (0, 0)
    down: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        return len(self.ids)

    def add(self, outcome: str, rid: str, detail: str = "") -> None:
        if outcome == "answered":
            self.answered.append(rid)
        elif outcome == "failed":
            self.failed[detail] += 1
        elif outcome == "lost":
            self.lost.append(rid)
        else:
            self.wrong.append(f"{rid}: {detail!r}")


@dataclass
class Report:
    rows: dict[str, Row] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)  # what one case leaves for a later one

    def row(self, fault: str) -> Row:
        return self.rows.setdefault(fault, Row(fault))

    def render(self) -> str:
        head = [
            "fault",
            "injected",
            "sent",
            "answered",
            "failed explicitly",
            "lost",
            "wrong",
            "billed twice",
            "DLQ entries (reasons)",
            "consumers alive",
            "s",
        ]
        lines = []
        for r in self.rows.values():
            lines.append(
                [
                    r.fault,
                    str(r.injected),
                    str(r.sent),
                    str(len(r.answered)),
                    _counts(r.failed),
                    str(len(r.lost)),
                    str(len(r.wrong)),
                    str(len(r.billed_twice)),
                    _counts(r.dlq),
                    f"{r.alive[0]}/{r.alive[1]}" + (f" (down: {', '.join(r.down)})" if r.down else ""),
                    f"{r.seconds:.0f}",
                ]
            )
        rows = list(self.rows.values())
        lines.append(
            [
                "total",
                str(sum(r.injected for r in rows)),
                str(sum(r.sent for r in rows)),
                str(sum(len(r.answered) for r in rows)),
                str(sum(sum(r.failed.values()) for r in rows)),
                str(sum(len(r.lost) for r in rows)),
                str(sum(len(r.wrong) for r in rows)),
                str(sum(len(r.billed_twice) for r in rows)),
                str(sum(sum(r.dlq.values()) for r in rows)),
                "",
                f"{sum(r.seconds for r in rows):.0f}",
            ]
        )
        widths = [max(len(x) for x in col) for col in zip(head, *lines, strict=True)]
        fmt = " | ".join(f"{{:<{w}}}" for w in widths)
        out = [fmt.format(*head), "-+-".join("-" * w for w in widths)]
        out += [fmt.format(*line) for line in lines]
        return "\n".join(out)


def _counts(c: collections.Counter[str]) -> str:
    if not c:
        return "0"
    return f"{sum(c.values())}: " + ", ".join(f"{k} x{n}" for k, n in c.most_common())


# --- load ----------------------------------------------------------------------------------


def prompt_of(rid: str) -> str:
    return f"chaos {rid}"


async def sdk_call(
    gw: GatewayClient, rid: str, scenario: str, *, stream: bool = False, model: str = "demo-openai", **kw: Any
) -> tuple[str, str]:
    """One request through the SDK: (outcome, detail)."""
    prompt = prompt_of(rid)
    msgs = [{"role": "user", "content": prompt}]
    try:
        if stream:
            text = ""
            async for c in gw.stream_chat(
                model=model,
                messages=msgs,
                request_id=rid,
                timeout_s=DEADLINE_S,
                emulator_scenario=scenario,
                **kw,
            ):
                text += c.delta.content or ""
        else:
            r = await gw.chat(
                model=model,
                messages=msgs,
                request_id=rid,
                timeout_s=DEADLINE_S,
                emulator_scenario=scenario,
                **kw,
            )
            text = r.message.content if r.message else ""
    except GatewayTimeout:
        return "lost", ""
    except GatewayError as err:
        return "failed", err.code
    except Exception as exc:  # the request could not even be published (the broker is away)
        return "failed", f"sdk {type(exc).__name__}"
    return ("answered", "") if text == prompt else ("wrong", text[:80])


async def http_call(
    http: httpx.AsyncClient, rid: str, scenario: str, *, stream: bool = False, model: str = "demo-openai"
) -> tuple[str, str]:
    """One request through the edge's OpenAI route: (outcome, detail)."""
    prompt = prompt_of(rid)
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": stream,
        "emulator_scenario": scenario,
    }
    try:
        async with http.stream(
            "POST", "/v1/chat/completions", json=body, headers={"x-request-id": rid}, timeout=DEADLINE_S
        ) as resp:
            raw = await resp.aread()
    except httpx.TimeoutException:
        return "lost", ""
    except httpx.TransportError as exc:  # the edge went away under the request: the caller knows
        return "failed", f"http {type(exc).__name__}"
    if resp.status_code != 200:
        try:
            code = orjson.loads(raw)["error"].get("code") or resp.status_code
        except Exception:
            code = resp.status_code
        return "failed", f"http {code}"
    if not stream:
        text = orjson.loads(raw)["choices"][0]["message"]["content"]
    else:
        text = ""
        for line in raw.split(b"\n"):
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            doc = orjson.loads(line[6:])
            if "error" in doc:
                return "failed", f"http stream {doc['error'].get('code')}"
            for ch in doc.get("choices", []):
                text += (ch.get("delta") or {}).get("content") or ""
    return ("answered", "") if text == prompt else ("wrong", text[:80])


async def run_load(
    row: Row,
    calls: Iterable[tuple[str, Callable[[str], Awaitable[tuple[str, str]]]]],
    *,
    pace_s: float = 0.0,
    during: Callable[[int], Awaitable[None]] | None = None,
) -> None:
    """Start each call (``(request id, call)``) ``pace_s`` after the previous one; ``during(i)``
    runs after the i-th is started (the fault goes in there); then wait for every answer."""
    tasks = []
    for i, (rid, call) in enumerate(calls):
        row.ids.append(rid)
        tasks.append(asyncio.create_task(_tally(row, rid, call)))
        if during is not None:
            await during(i)
        if pace_s:
            await asyncio.sleep(pace_s)  # the load's pace, not a synchronisation
    await asyncio.gather(*tasks)


async def _tally(row: Row, rid: str, call: Callable[[str], Awaitable[tuple[str, str]]]) -> None:
    outcome, detail = await call(rid)
    row.add(outcome, rid, detail)


def new_rid(tag: str) -> str:
    return f"{tag}-{os.urandom(6).hex()}"


def jitter(lo_ms: int, hi_ms: int) -> int:
    return random.randint(lo_ms, hi_ms)


# --- the books -------------------------------------------------------------------------------


class Books:
    """``llm.usage`` and ``llm.dlq`` as read since the suite began, and the usage sink's ledger."""

    def __init__(self, bootstrap: str, prefix: str, s3_url: str, usage_bucket: str):
        self.bootstrap, self.prefix = bootstrap, prefix
        self.usage = TopicTail(bootstrap, f"{prefix}llm.usage")
        self.dlq = TopicTail(bootstrap, f"{prefix}llm.dlq")
        self.audit = TopicTail(bootstrap, f"{prefix}llm.audit")
        self.store = S3ObjectStore(usage_bucket, endpoint_url=s3_url, create_bucket=False)

    async def __aenter__(self) -> Books:
        for t in (self.usage, self.dlq, self.audit):
            await t.__aenter__()
        await self.store.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in (self.usage, self.dlq, self.audit):
            await t.__aexit__(*exc)
        await self.store.aclose()

    def usage_counts(self, ids: set[str]) -> collections.Counter[str]:
        out: collections.Counter[str] = collections.Counter()
        for r in self.usage.records:
            with contextlib.suppress(Exception):
                rid = orjson.loads(r.value)["request_id"]
                if rid in ids:
                    out[rid] += 1
        return out

    def started(self, ids: set[str]) -> int:
        n = 0
        for r in self.audit.records:
            if b'"action":"started"' in r.value:
                with contextlib.suppress(Exception):
                    n += orjson.loads(r.value)["request_id"] in ids
        return n

    async def ledger_counts(self, ids: set[str]) -> collections.Counter[str]:
        """How many times the usage sink's S3 ledger holds each of ``ids``."""
        out: collections.Counter[str] = collections.Counter()
        keys = [k for k in await self.store.keys("usage/") if k.endswith(".ndjson")]
        slots = asyncio.Semaphore(16)

        async def read(key: str) -> bytes:
            async with slots:
                obj = await self.store.get(key)
            return obj.body if obj else b""

        for body in await asyncio.gather(*(read(k) for k in keys)):
            for line in body.splitlines():
                with contextlib.suppress(Exception):
                    rid = orjson.loads(line)["request_id"]
                    if rid in ids:
                        out[rid] += 1
        return out

    def dlq_since(self, start: int) -> list[Any]:
        return self.dlq.records[start:]


def reason_kind(reason: bytes) -> str:
    """What kind of problem a DLQ reason names (its particulars left out): ``invalid JSON``,
    ``not an object``, ``missing field``, ``unknown operation``, ``wrong field``, ``handler
    error: <exception>``, or the reason itself when it is none of these (a plan naming a
    deployment this executor lacks, ...)."""
    text = reason.decode(errors="replace")
    if text.startswith("handler error:"):
        return "handler error: " + text.split(":")[1].strip()
    for needle, kind in (
        ("invalid JSON", "invalid JSON"),
        ("does not match any of the expected tags", "unknown operation"),
        ("Input should be an object", "not an object"),
        ("Input should be a valid dictionary", "not an object"),
        ("Field required", "missing field"),
    ):
        if needle in text:
            return kind
    if ": " in text and text.split(":")[0].strip().isidentifier():  # "<event>: <field>: <problem>"
        return "wrong field"
    return text[:60]


# --- liveness ----------------------------------------------------------------------------------


async def group_lag(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    """Records of ``topic`` (its ``partitions``, as topics.yaml declares them: never what a fresh
    client's metadata happens to hold yet) the group has not committed."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await c.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        lag = 0
        for tp in tps:
            om = committed.get(tp)
            done = om.offset if om is not None and om.offset >= 0 else 0
            lag += max(ends[tp] - done, 0)
        return lag
    finally:
        await c.stop()
        await admin.close()


async def until(cond: Callable[[], Awaitable[bool]], within: float, step: float = 0.25) -> bool:
    """Whether the (async) condition came true within ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(Exception):
            if await cond():
                return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)


async def alive(
    stack: Stack, bootstrap: str, prefix: str, edge_url: str | None
) -> tuple[int, int, list[str]]:
    """(alive, expected, names of those not): a service is alive when its process runs and it
    is a member of its group holding partitions, in a group of exactly as many members as there
    are such services (a killed member the broker still lists does not count); the edge when it
    answers ``/readyz``."""
    comps = [c for c in stack.status() if c["name"] not in ("kafka", "s3", "emulator")]
    kinds = {c["name"]: _kind(c["name"]) for c in comps}
    down = []
    for kind, group in GROUPS.items():
        names = [n for n, k in kinds.items() if k == kind]
        members = await group_members(bootstrap, prefix + group)
        for name in names:
            c = next(c for c in comps if c["name"] == name)
            held = any(cid.endswith(name) and any(parts.values()) for cid, parts in members.items())
            if not (c["running"] and held and len(members) == len(names)):
                down.append(name)
    if "edge" in kinds:
        try:
            async with httpx.AsyncClient(base_url=edge_url or "", timeout=3) as h:
                if (await h.get("/readyz")).status_code != 200:
                    down.append("edge")
        except httpx.HTTPError:
            down.append("edge")
    return len(comps) - len(down), len(comps), down


def _kind(name: str) -> str:
    base, _, n = name.rpartition("-")
    return base if n.isdigit() else name

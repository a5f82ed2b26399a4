"""What admission (rate limits and budgets) adds to the router, against governance switched off,
in one run (README "Rate limits and budgets"; target: <= 1 ms at p99, c=1 and c=16, and no
broker round trip).

One router process (``python -m services.router``, the real service) on the broker, configured
with two tenants that differ only in governance: ``free`` (no limits, no budgets) and ``gov``
(limits per tenant, user, key and client id, a daily and a per-user monthly budget, all far
above what the run uses, so nothing is refused and every request takes the whole admission
path and writes its ``llm.admissions`` record). The load alternates the two tenants request by
request, so both see the same machine; latency is request publish -> plan read from
``llm.exec`` (two Kafka hops through the router). An added broker round trip would show as
about a millisecond at p50.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python -m bench.admission_bench [--requests 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.contracts.events import ChatRequested
from services.runtime.kafka import Publisher
from services.runtime.settings import ROOT
from services.runtime.topics import Topics, apply_topics

BIG = 10**9
CONFIG = f"""
providers: {{p: {{kind: openai, base_url: "http://127.0.0.1:9/v1"}}}}
models:
  m:
    max_output_tokens: 4096
    deployments: [{{provider: p, model: m1, price: {{input_per_mtok: 0.15, output_per_mtok: 0.60}}}}]
tenants:
  free: {{}}
  gov:
    api_keys:
      - {{name: bench key, user: u0, sha256: "{"0" * 64}"}}
    limits:
      requests_per_min: {BIG}
      tokens_per_min: {BIG * 1000}
      per_user: {{requests_per_min: {BIG}, tokens_per_min: {BIG * 1000}}}
      keys: {{bench key: {{requests_per_min: {BIG}}}}}
      per_client: {{requests_per_min: {BIG}}}
    budgets:
      - {{period: day, usd: {BIG}}}
      - {{period: month, usd: {BIG}, per: user}}
"""
MSGS = [{"role": "user", "content": "How do Kafka partitions keep per-key order? Answer briefly."}]


def request(tenant: str, i: int) -> ChatRequested:
    extra = {"api_key": "bench key", "client_id": f"svc-{i % 4}"} if tenant == "gov" else {}
    return ChatRequested(
        request_id=f"{tenant}-{uuid.uuid4().hex}",
        tenant_id=tenant,
        user_id=f"u{i % 50}",
        model="m",
        messages=MSGS,
        params={"max_tokens": 64},
        **extra,
    )  # type: ignore[arg-type]


class Plans:
    """Reads ``llm.exec`` from its end: the time each request's plan arrived."""

    def __init__(self, bootstrap: str, topic: str):
        self.c = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100
        )
        self.topic = topic
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.c.start()
        await self.c._client.force_metadata_update()
        tps = [TopicPartition(self.topic, p) for p in sorted(self.c.partitions_for_topic(self.topic) or ())]
        self.c.assign(tps)
        await self.c.seek_to_end(*tps)
        for tp in tps:
            await self.c.position(tp)
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            for recs in (await self.c.getmany(timeout_ms=200)).values():
                now = time.perf_counter()
                for r in recs:
                    fut = self.waiting.pop(r.key.decode(), None) if r.key else None
                    if fut is not None and not fut.done():
                        fut.set_result(now)

    async def aclose(self) -> None:
        if self.task:
            self.task.cancel()
        await self.c.stop()


async def one(publisher: Publisher, plans: Plans, topic: str, req: ChatRequested) -> float:
    fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    plans.waiting[req.request_id] = fut
    t0 = time.perf_counter()
    await (await publisher.publish(topic, req, key=req.tenant_id))
    return (await asyncio.wait_for(fut, 30)) - t0


async def load(
    publisher: Publisher, plans: Plans, topic: str, n: int, concurrency: int
) -> dict[str, list[float]]:
    """``n`` requests per tenant, ``concurrency`` at a time, tenants alternating per request."""
    out: dict[str, list[float]] = {"free": [], "gov": []}
    todo = [("free" if i % 2 == 0 else "gov", i) for i in range(2 * n)]

    async def worker() -> None:
        while todo:
            tenant, i = todo.pop()
            out[tenant].append(await one(publisher, plans, topic, request(tenant, i)))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(int(q * len(xs)), len(xs) - 1)] * 1000


def start_router(bootstrap: str, prefix: str, state: Path) -> subprocess.Popen[bytes]:
    (state / "config.yaml").write_text(CONFIG)
    env = os.environ | {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "LLMGW_CONFIG": str(state / "config.yaml"),
        "LLMGW_TOPIC_PREFIX": prefix,
        "LLMGW_READY_FILE": str(state / "router.ready"),
        "LLMGW_LOG_LEVEL": "WARNING",
        "LLMGW_INSTANCE_ID": "bench-router",
    }
    with open(state / "router.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "services.router"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
        )


async def run(bootstrap: str, topics: Topics, state: Path, proc: subprocess.Popen[bytes], n: int) -> None:
    ready = state / "router.ready"
    async with asyncio.timeout(60):
        while not ready.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"router exited: {(state / 'router.log').read_text()[-2000:]}")
            await asyncio.sleep(0.1)
    plans = Plans(bootstrap, topics.exec.name)
    await plans.start()
    try:
        async with Publisher(bootstrap) as publisher:
            await load(publisher, plans, topics.requests.name, 100, 4)  # warm-up (and the ledger's rebuild)
            rows = [(c, await load(publisher, plans, topics.requests.name, n, c)) for c in (1, 16)]
    finally:
        await plans.aclose()
    print(
        f"router admission, {n} requests per tenant per concurrency, tenants alternating (ms, request -> plan)"
    )
    print()
    print("| c | tenant | p50 | p90 | p99 | added p50 | added p99 |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for c, got in rows:
        f50, f99 = pct(got["free"], 0.5), pct(got["free"], 0.99)
        for tenant in ("free", "gov"):
            xs = got[tenant]
            added = f"{pct(xs, 0.5) - f50:+.2f} | {pct(xs, 0.99) - f99:+.2f}" if tenant == "gov" else " | "
            print(
                f"| {c} | {tenant} | {pct(xs, 0.5):.2f} | {pct(xs, 0.9):.2f} | {pct(xs, 0.99):.2f} | {added} |"
            )
    print()
    print(
        f"(mean per request at c=1: free {statistics.mean(rows[0][1]['free']) * 1000:.2f} ms, "
        f"gov {statistics.mean(rows[0][1]['gov']) * 1000:.2f} ms)"
    )


async def delete_topics(bootstrap: str, topics: Topics) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([t.name for t in topics])
    finally:
        await admin.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000, help="per tenant and concurrency level")
    args = ap.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    topics = Topics.load(ROOT / "topics.yaml", prefix)
    asyncio.run(apply_topics(bootstrap, topics))
    state = Path(tempfile.mkdtemp(prefix="admission-bench-"))
    proc = start_router(bootstrap, prefix, state)
    try:
        asyncio.run(run(bootstrap, topics, state, proc, args.requests))
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        asyncio.run(delete_topics(bootstrap, topics))


if __name__ == "__main__":
    main()

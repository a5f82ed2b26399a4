"""How long the router takes to rebuild a partition's ledger (README "Rate limits and budgets").

Writes ``--records`` usage records (default 1,000,000) of one governed tenant (a monthly budget,
1,000 users) into its partition of a fresh ``llm.usage`` on the broker, then times the rebuild a
new owner does on assignment (``LedgerKeeper.read``, the same code):

* **from zero**: no snapshot yet, every record of the period replayed (the worst case, and a
  first start after an upgrade);
* **from a snapshot**: the tenant's ``llm.ledger`` snapshot written after those records, then
  ``--tail`` more records (default 10,000: about what a snapshot interval leaves behind on a
  busy partition), replayed from the offset the snapshot covers.

Both rebuilds must agree on the tenant's spend. The run deletes its topics (``bench<8 hex>.*``).

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python -m bench.ledger_bench [--records N] [--tail N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from services.router.admission import Governor, tenant_partition
from services.router.keeper import LedgerKeeper
from services.runtime.config import GatewayConfig
from services.runtime.kafka import Publisher
from services.runtime.settings import ROOT
from services.runtime.topics import Topics, apply_topics

TENANT = "bench-tenant"
CONFIG = {
    "providers": {"p": {"kind": "openai", "base_url": "http://p.invalid/v1"}},
    "models": {"m": {"deployments": [{"provider": "p", "model": "m1"}]}},
    "tenants": {
        TENANT: {"budgets": [{"period": "month", "usd": 1e9}, {"period": "day", "usd": 1e6, "per": "user"}]}
    },
}


def usage(i: int) -> bytes:
    return orjson.dumps(
        {
            "type": "llm.usage.v1",
            "event_id": uuid.uuid4().hex,
            "request_id": f"req-{i:09d}",
            "tenant_id": TENANT,
            "user_id": f"user-{i % 1000}",
            "occurred_at": "2026-12-01T00:00:00Z",
            "status": "ok",
            "operation": "chat",
            "alias": "m",
            "provider": "p",
            "model": "m1",
            "prompt_tokens": 40,
            "completion_tokens": 80,
            "total_tokens": 120,
            "cost_usd": 0.0000123,
            "ttft_ms": 12.5,
            "total_ms": 80.1,
            "streamed": False,
        }
    )


async def write(bootstrap: str, topic: str, partition: int, start: int, n: int) -> float:
    """Write records ``start .. start+n`` to ``topic`` / ``partition``; seconds taken."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    t0 = time.perf_counter()
    try:
        pending = []
        for i in range(start, start + n):
            pending.append(await producer.send(topic, usage(i), key=TENANT.encode(), partition=partition))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - t0


async def run(bootstrap: str, records: int, tail: int) -> None:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    topics = Topics.load(ROOT / "topics.yaml", prefix)
    await apply_topics(bootstrap, topics, only=["requests", "usage", "admissions", "ledger"])
    config = GatewayConfig.model_validate(CONFIG)
    governor = Governor(config, lambda: config.models)
    p = tenant_partition(TENANT, topics.requests.partitions)
    try:
        wrote = await write(bootstrap, topics.usage.name, p, 0, records)
        print(f"wrote {records:,} usage records to partition {p} in {wrote:.1f} s")
        async with Publisher(bootstrap) as publisher:
            keeper = LedgerKeeper(bootstrap, topics, governor, publisher)
            t0 = time.perf_counter()
            ledgers = await keeper.read({p})
            zero = time.perf_counter() - t0
            first = ledgers[p].tenant(TENANT)
            assert first is not None
            month = next(k for k in first.spent if k[0] == "tenant")
            assert abs(first.spent[month] - records * 0.0000123) < 1e-6, first.spent[month]
            keeper.ledgers = ledgers
            snaps = await keeper.snapshot_now([p], force=True)
            await write(bootstrap, topics.usage.name, p, records, tail)
            t0 = time.perf_counter()
            again = await keeper.read({p})
            snapped = time.perf_counter() - t0
            second = again[p].tenant(TENANT)
            assert second is not None
            assert abs(second.spent[month] - (records + tail) * 0.0000123) < 1e-6, second.spent[month]
        print()
        print("| rebuild of one partition | usage records read | seconds | records/s |")
        print("|---|---:|---:|---:|")
        print(f"| from zero (no snapshot) | {records:,} | {zero:.2f} | {records / zero:,.0f} |")
        print(
            f"| from a snapshot ({snaps} record) + tail | {tail:,} | {snapped:.3f} | {tail / snapped:,.0f} |"
        )
    finally:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.delete_topics(
                [t.name for t in topics if t.role in ("requests", "usage", "admissions", "ledger")]
            )
        finally:
            await admin.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--tail", type=int, default=10_000)
    args = ap.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    asyncio.run(run(bootstrap, args.records, args.tail))


if __name__ == "__main__":
    main()

"""Usage sink throughput (issue 11, target: >= 5,000 records/s written to S3 on this machine).

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python -m bench.sink_bench             # 50,000 records
    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python -m bench.sink_bench --records 20000 --tenants 4

What it does: a fresh topic prefix (``bench<8 hex>.``) and a local S3 (moto's server, as
``llmgw up`` runs it, on a free port); ``--records`` usage records of ``--tenants`` tenants are
published to ``llm.usage`` first (a backlog), then the usage sink is started as its own process
(``python -m services.usage_sink``, the stack's default batch settings unless ``--batch-records``
/ ``--batch-ms``). Measured: from the sink's ready file to the moment its group's committed
offsets reach the end of every partition, i.e. every record written to S3 *and* committed; that
includes joining the consumer group. Also the sink's and moto's CPU seconds over that time, and
the records found in the bucket (each exactly once). The topics are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.cli import infra
from services.contracts.events import UsageRecorded
from services.runtime.codec import encode
from services.runtime.s3 import S3ObjectStore
from services.runtime.topics import Topics, apply_topics
from services.usage_sink.app import GROUP
from services.usage_sink.layout import ROOT as USAGE_ROOT

from .procstat import cpu_seconds
from .stackutil import delete_topics

ROOT = Path(__file__).resolve().parents[1]
TARGET = 5000.0


def record(i: int, tenants: int, now: datetime) -> bytes:
    return encode(
        UsageRecorded(
            event_id=f"e{i}",
            request_id=f"r{i}",
            tenant_id=f"tenant{i % tenants}",
            user_id=f"user{i % 7}",
            client_id=f"client{i % 3}",
            status="ok",
            alias="demo-openai",
            provider="emulator",
            model="gpt-emu",
            prompt_tokens=12,
            completion_tokens=30,
            total_tokens=42,
            cost_usd=0.0000201,
            ttft_ms=41.5,
            total_ms=120.0,
            occurred_at=now - timedelta(milliseconds=i),
        )
    )


async def publish(bootstrap: str, topic: str, n: int, tenants: int) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=512 * 1024,
    )
    await producer.start()
    try:
        now = datetime.now(UTC)
        acks = [
            await producer.send(topic, record(i, tenants, now), key=f"tenant{i % tenants}".encode())
            for i in range(n)
        ]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


async def progress(bootstrap: str, group: str, topic: str, partitions: int) -> tuple[int, int]:
    """(records committed by the group, records in the topic)."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await c.end_offsets(tps)
        done = 0
        for tp in tps:
            done += (await c.committed(tp)) or 0
        return done, sum(ends.values())
    finally:
        await c.stop()


async def stored(url: str, bucket: str) -> tuple[int, int, int]:
    """(objects, records, duplicate records) in the bucket."""
    async with S3ObjectStore(bucket, endpoint_url=url, create_bucket=False) as store:
        keys = await store.keys(USAGE_ROOT + "tenant=")
        seen: Counter[str] = Counter()
        for k in keys:
            seen.update(orjson.loads(x)["event_id"] for x in (await store.get(k)).body.splitlines())
    return len(keys), sum(seen.values()), sum(v - 1 for v in seen.values() if v > 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--tenants", type=int, default=8)
    ap.add_argument("--batch-records", type=int, default=None)
    ap.add_argument("--batch-ms", type=int, default=None)
    args = ap.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        print(
            "sink_bench: set KAFKA_BOOTSTRAP_SERVERS to a running broker (`llmgw up` starts one on 9092)",
            file=sys.stderr,
        )
        return 2
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    topics = Topics.load(ROOT / "topics.yaml", prefix)
    state = Path(tempfile.mkdtemp(prefix="sink-bench-"))
    port = infra.free_port()
    moto = subprocess.Popen(
        infra.moto_command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    sink: subprocess.Popen[bytes] | None = None
    url, bucket = f"http://127.0.0.1:{port}", "llmgw-usage"
    try:
        infra.wait_port("127.0.0.1", port, 30, moto, "moto")
        asyncio.run(apply_topics(bootstrap, topics, only=["usage", "dlq"]))
        t0 = time.perf_counter()
        asyncio.run(publish(bootstrap, topics.usage.name, args.records, args.tenants))
        print(
            f"published {args.records} usage records of {args.tenants} tenants in {time.perf_counter() - t0:.1f}s"
        )

        ready = state / "ready"
        env = os.environ | {
            "LLMGW_TOPIC_PREFIX": prefix,
            "LLMGW_S3_ENDPOINT": url,
            "LLMGW_USAGE_BUCKET": bucket,
            "LLMGW_READY_FILE": str(ready),
            "LLMGW_LOG_LEVEL": "WARNING",
        }
        if args.batch_records:
            env["LLMGW_USAGE_SINK_BATCH_RECORDS"] = str(args.batch_records)
        if args.batch_ms:
            env["LLMGW_USAGE_SINK_BATCH_MS"] = str(args.batch_ms)
        log = open(state / "sink.log", "wb")
        sink = subprocess.Popen(
            [sys.executable, "-m", "services.usage_sink"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        while not ready.exists():
            if sink.poll() is not None:
                raise RuntimeError(f"the sink exited: {(state / 'sink.log').read_text()[-2000:]}")
            time.sleep(0.01)
        t_ready = time.perf_counter()
        cpu_sink, cpu_moto = cpu_seconds(sink.pid) or 0.0, cpu_seconds(moto.pid) or 0.0
        group = prefix + GROUP
        while True:
            done, total = asyncio.run(progress(bootstrap, group, topics.usage.name, topics.usage.partitions))
            if done >= total:
                break
            if sink.poll() is not None:
                raise RuntimeError(f"the sink exited: {(state / 'sink.log').read_text()[-2000:]}")
            time.sleep(0.05)
        elapsed = time.perf_counter() - t_ready
        cpu_sink = (cpu_seconds(sink.pid) or 0.0) - cpu_sink
        cpu_moto = (cpu_seconds(moto.pid) or 0.0) - cpu_moto
        objects, records, dupes = asyncio.run(stored(url, bucket))
        rate = args.records / elapsed
        print(
            f"usage sink: {args.records} records written to S3 and committed in {elapsed:.2f}s "
            f"(from ready, group join included): {rate:,.0f} records/s (target >= {TARGET:,.0f}: "
            f"{'met' if rate >= TARGET else 'NOT met'})"
        )
        print(
            f"  CPU: sink {cpu_sink:.2f}s ({1e6 * cpu_sink / args.records:.0f} us/record), moto {cpu_moto:.2f}s"
        )
        print(f"  bucket: {objects} objects, {records} records, {dupes} duplicates")
        return 0 if records == args.records and dupes == 0 else 1
    finally:
        if sink is not None and sink.poll() is None:
            sink.terminate()
            sink.wait(30)
        moto.terminate()
        moto.wait(10)
        delete_topics(bootstrap, prefix)


if __name__ == "__main__":
    sys.exit(main())

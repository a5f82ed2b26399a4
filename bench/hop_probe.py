"""The machine's floor for one Kafka hop between two processes, with the gateway's client settings.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python -m bench.hop_probe [--requests 3000] [--partitions 1]

A ping process publishes to topic A; an echo process (a child) reads A and publishes each record
to topic B; the ping process reads B. Both use the gateway's producer settings (idempotent,
acks=all, linger 0) and a 500 ms long-poll fetch. Half the round trip is what one hop costs
on this machine at concurrency 1: the edge path has three, so the gateway's added latency at
concurrency 1 cannot be below about three times this, plus the provider call. Run it next to
``bench.http_bench`` to tell a slower machine from a slower gateway: it drifts with the machine
as the gateway does. Needs a running broker (``llmgw up --detach`` starts one on :9092); its
two topics (``hopprobe<hex>.a/.b``) are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.kafka_bench import summary


def _producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0)


async def _reader(bootstrap: str, topic: str, partitions: int) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=500, enable_auto_commit=False)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    return consumer


async def echo(bootstrap: str, src: str, dst: str, partitions: int) -> None:
    producer = _producer(bootstrap)
    await producer.start()
    consumer = await _reader(bootstrap, src, partitions)
    print("ready", flush=True)
    try:
        while True:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    await producer.send(dst, r.value, key=r.key)
    finally:
        await consumer.stop()
        await producer.stop()


async def ping(bootstrap: str, requests: int, partitions: int) -> None:
    prefix = f"hopprobe{uuid.uuid4().hex[:8]}"
    a, b = f"{prefix}.a", f"{prefix}.b"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(a, partitions, 1), NewTopic(b, partitions, 1)])
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.hop_probe",
        "--echo",
        a,
        b,
        "--partitions",
        str(partitions),
        stdout=asyncio.subprocess.PIPE,
        env=dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap),
    )
    producer = _producer(bootstrap)
    try:
        await producer.start()
        consumer = await _reader(bootstrap, b, partitions)
        assert child.stdout is not None
        if (await child.stdout.readline()).strip() != b"ready":
            raise SystemExit("the echo process did not start")
        rtt: list[float] = []
        for i in range(requests):
            t0 = time.perf_counter()
            await producer.send(a, b"x" * 300, key=str(i % 64).encode())
            while not await consumer.getmany(timeout_ms=5000):
                pass
            rtt.append((time.perf_counter() - t0) * 1000)
        await consumer.stop()
    finally:
        if child.returncode is None:
            child.terminate()
        await child.wait()
        await producer.stop()
        await admin.delete_topics([a, b])
        await admin.close()
    hop = summary([ms / 2 for ms in rtt[len(rtt) // 5 :]])  # the first fifth warms connections and the JIT
    print(
        f"one Kafka hop between two processes ({partitions} partition(s), {len(rtt) - len(rtt) // 5} round trips):"
    )
    print(f"  p50 {hop['p50']:.2f} ms  p90 {hop['p90']:.2f} ms  p99 {hop['p99']:.2f} ms")
    print(f"  three hops (the edge path's floor before any gateway work): p50 {3 * hop['p50']:.2f} ms")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.hop_probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--echo", nargs=2, metavar=("SRC", "DST"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    import uvloop

    if args.echo:
        uvloop.run(echo(bootstrap, *args.echo, args.partitions))
    else:
        uvloop.run(ping(bootstrap, args.requests, args.partitions))


if __name__ == "__main__":
    main()

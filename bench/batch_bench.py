"""Interactive latency while a large batch runs (README "Batches", issue 13: "interactive
requests' p99 while a 10,000-item batch runs, within 2x of the idle p99").

    python -m bench.batch_bench                    # 10,000 items, ~3-5 min
    python -m bench.batch_bench --items 2000 --seconds 10   # a quick run

On a throw-away stack with the edge: chat requests to ``demo-openai`` through the edge at
``--conc`` (4) closed-loop clients, in phases of ``--seconds``: *idle* (no batch) first, then a
batch of ``--items`` chat lines on ``demo-ollama`` (the requests path: its items run as ordinary
job requests through the same router and executor, at most ``batches.max_in_flight`` at once) is
created the way the edge creates one (its items in S3, a ``validating`` record on
``llm.batches``), and *batch* phases run while it does; once it has completed, *idle* phases again.
Reported: p50/p90/p99 of the interactive requests in each condition (idle = before and after
together), the ratio of the p99s, and the batch's throughput and outcome counts.

Output: a table on stdout, ``bench/results/batch-<ts>.json`` and ``bench/reports/batch-<ts>.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.kafka_bench import log
from bench.media_bench import chat, merged, phase

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPORTS = HERE / "reports"
INTERACTIVE = "demo-openai"
BATCH_ALIAS = "demo-ollama"


def start() -> tuple[Any, Any]:
    from services.cli.stack import Stack

    from .stackutil import new_settings

    settings = new_settings()
    stack = Stack(settings)
    log(f"starting the stack in {settings.state_dir} (topic prefix {settings.topic_prefix}, edge)")
    t0 = time.monotonic()
    stack.up(routers=1, executors=1, edge=True)
    log(f"stack ready in {time.monotonic() - t0:.1f}s")
    return stack, settings


async def create_batch(settings: Any, n: int) -> str:
    """What the edge does for ``POST /v1/batches``: the items in S3, then the batch's record."""
    from services.contracts.events import (
        BatchCounts,
        BatchItem,
        BatchUpdated,
        ChatParams,
        ChatRequested,
        Message,
        new_id,
        utcnow,
    )
    from services.runtime.batches import batch_key, item_id
    from services.runtime.config import load_config
    from services.runtime.kafka import Publisher
    from services.runtime.media.storage import S3FileStorage
    from services.runtime.topics import Topics

    config = load_config(settings.config_path, settings.env)
    batch_id = f"batch_{new_id()}"
    key = f"tenants/demo/batches/{batch_id}/requests.jsonl"
    lines = [
        ChatRequested(
            request_id=item_id(batch_id, i),
            tenant_id="demo",
            user_id="bench",
            model=BATCH_ALIAS,
            messages=[Message(role="user", content=f"summarise line {i}")],
            params=ChatParams(max_tokens=16),
            job=True,
            batch=BatchItem(batch_id=batch_id, custom_id=f"line-{i}", index=i),
        )
        .model_dump_json()
        .encode()
        for i in range(n)
    ]
    storage = S3FileStorage(config.media.bucket, endpoint_url=settings.s3_url)
    await storage.start()
    try:
        await storage.put(key, b"\n".join(lines) + b"\n", "application/jsonl")
    finally:
        await storage.aclose()
    now = utcnow()
    batch = BatchUpdated(
        request_id=batch_id,
        tenant_id="demo",
        user_id="bench",
        batch_id=batch_id,
        api="openai",
        status="validating",
        endpoint="/v1/chat/completions",
        model=BATCH_ALIAS,
        requests_key=key,
        completion_window_s=config.batches.completion_window_s,
        created_at=now,
        expires_at=now + timedelta(seconds=config.batches.completion_window_s),
        counts=BatchCounts(total=n),
    )
    topics = Topics.load(settings.topics_path, settings.topic_prefix)
    async with Publisher(settings.bootstrap_servers) as pub:
        await (await pub.publish(topics.batches.name, batch, key=batch_key(batch)))
    return batch_id


class Watch:
    """The batch's newest record, as the batch service writes it."""

    def __init__(self, settings: Any, batch_id: str):
        from services.runtime.batches import BatchesView
        from services.runtime.topics import Topics

        self.batch_id = batch_id
        self.ended = asyncio.Event()
        self.view = BatchesView(
            settings.bootstrap_servers,
            Topics.load(settings.topics_path, settings.topic_prefix),
            on_change=lambda b, p: self.ended.set() if self.done() else None,
        )

    def now(self) -> Any:
        return self.view.peek("demo", self.batch_id)

    def done(self) -> bool:
        b = self.now()
        return b is not None and b.status in ("completed", "failed", "expired", "cancelled")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stack, settings = await asyncio.to_thread(start)
    edge_url = f"http://{settings.edge_host}:{settings.edge_port}"
    body = orjson.dumps({"model": INTERACTIVE, "messages": [{"role": "user", "content": "hello"}]})
    try:
        async with aiohttp.ClientSession() as session:
            fn = chat(session, edge_url, body, None)
            await phase(fn, args.conc, 3, 10**9)  # warm-up
            idle = [await phase(fn, args.conc, args.seconds, 10**9) for _ in range(args.idle_phases)]
            batch_id = await create_batch(settings, args.items)
            t0 = time.monotonic()
            watch = Watch(settings, batch_id)
            await watch.view.start()
            busy = []
            while not watch.done() and len(busy) < args.max_batch_phases:
                busy.append(await phase(fn, args.conc, args.seconds, 10**9))
                b = watch.now()
                log(f"  batch: {b.status if b else '?'} {b.counts.model_dump() if b else ''}")
            await watch.ended.wait()
            took = time.monotonic() - t0
            final = watch.now()
            await watch.view.aclose()
            after = [await phase(fn, args.conc, args.seconds, 10**9) for _ in range(args.idle_phases)]
    finally:
        await asyncio.to_thread(stack.down)
    idle_all = merged(idle + after)
    busy_all = merged(busy)
    p99_idle, p99_busy = idle_all["lat_ms"]["p99"], busy_all["lat_ms"]["p99"]
    return {
        "items": args.items,
        "conc": args.conc,
        "phase_s": args.seconds,
        "idle": idle_all,
        "during_batch": busy_all,
        "p99_ratio": round(p99_busy / p99_idle, 2) if p99_idle and p99_busy else None,
        "batch": {
            "status": final.status if final else None,
            "counts": final.counts.model_dump() if final else None,
            "seconds": round(took, 1),
            "items_per_s": round(args.items / took, 1),
        },
        "max_in_flight": _max_in_flight(settings),
    }


def _max_in_flight(settings: Any) -> int:
    from services.runtime.config import load_config

    return load_config(settings.config_path, settings.env).batches.max_in_flight


def report(res: dict[str, Any]) -> str:
    i, b = res["idle"]["lat_ms"], res["during_batch"]["lat_ms"]
    batch = res["batch"]
    return "\n".join(
        [
            f"# Interactive latency while a {res['items']:,}-item batch runs",
            "",
            f"`python -m bench.batch_bench --items {res['items']}`: {res['conc']} closed-loop clients,"
            f" chat to `{INTERACTIVE}` through the edge, phases of {res['phase_s']} s; the batch on"
            f" `{BATCH_ALIAS}` (requests path, `batches.max_in_flight` {res['max_in_flight']}).",
            "",
            "| condition | requests | p50 ms | p90 ms | p99 ms |",
            "|---|---:|---:|---:|---:|",
            f"| idle (before and after) | {res['idle']['ok']} | {i['p50']} | {i['p90']} | {i['p99']} |",
            f"| batch running | {res['during_batch']['ok']} | {b['p50']} | {b['p90']} | {b['p99']} |",
            "",
            f"p99 during the batch / idle p99: **{res['p99_ratio']}** (target: at most 2).",
            "",
            f"The batch: {batch['status']}, {batch['counts']}, in {batch['seconds']} s"
            f" ({batch['items_per_s']} items/s).",
            "",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.batch_bench")
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--conc", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--idle-phases", type=int, default=2)
    ap.add_argument("--max-batch-phases", type=int, default=8)
    args = ap.parse_args()
    res = asyncio.run(run(args))
    ts = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    REPORTS.mkdir(exist_ok=True)
    (RESULTS / f"batch-{ts}.json").write_text(json.dumps(res, indent=2))
    md = report(res)
    (REPORTS / f"batch-{ts}.md").write_text(md)
    print(md)
    log(f"wrote {REPORTS / f'batch-{ts}.md'}")


if __name__ == "__main__":
    main()

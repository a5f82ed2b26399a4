"""The batch service on the whole stack (README "Batches"), driven the way the edge drives it: the
items' request events in S3 (moto) and a ``validating`` record on ``llm.batches``.

* the requests path (an alias whose provider has no batch API): every item runs as a job, at most
  ``batches.max_in_flight`` at once, each billed once at half price; the batch completes with the
  counts of its items' outcomes;
* a cancel half-way: what had not started never runs (``canceled``), what ran stays;
* kill -9 of the batch service mid-batch: the batch still completes, each item ends once and is
  billed once.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import orjson
import pytest

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
from services.runtime.batches import batch_key, item_id, moved
from services.runtime.config import load_config
from services.runtime.kafka import Publisher
from services.runtime.media.storage import S3FileStorage
from services.runtime.pricing import cost_usd
from services.runtime.topics import Topics
from tests.e2e.helpers import TopicTail
from tests.e2e.test_crash_safety import kill_and_restart

pytestmark = pytest.mark.asyncio(loop_scope="session")

ALIAS = "demo-ollama"  # emulator-ollama: no batch API, so the requests path


def topics_of(settings) -> Topics:
    return Topics.load(settings.topics_path, settings.topic_prefix)


async def create_batch(
    settings, n: int, scenario: str = "tokens=5", line_tenant: str = "demo"
) -> BatchUpdated:
    """What the edge does for ``POST /v1/batches``: the items in S3, then the batch's record."""
    config = load_config(settings.config_path, settings.env)
    batch_id = f"batch_{new_id()}"
    key = f"tenants/demo/batches/{batch_id}/requests.jsonl"
    lines = []
    for i in range(n):
        req = ChatRequested(
            request_id=item_id(batch_id, i),
            tenant_id=line_tenant,
            user_id="tester",
            model=ALIAS,
            messages=[Message(role="user", content=f"line {i}")],
            params=ChatParams(max_tokens=16, extra={"emulator_scenario": scenario}),
            job=True,
            batch=BatchItem(batch_id=batch_id, custom_id=f"req-{i}", index=i),
        )
        lines.append(req.model_dump_json().encode())
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
        user_id="tester",
        batch_id=batch_id,
        api="openai",
        status="validating",
        endpoint="/v1/chat/completions",
        model=ALIAS,
        requests_key=key,
        completion_window_s=config.batches.completion_window_s,
        created_at=now,
        expires_at=now + timedelta(seconds=config.batches.completion_window_s),
        counts=BatchCounts(total=n),
    )
    await publish(settings, batch)
    return batch


async def publish(settings, batch: BatchUpdated) -> None:
    async with Publisher(settings.bootstrap_servers) as pub:
        await (await pub.publish(topics_of(settings).batches.name, batch, key=batch_key(batch)))


def latest(records, batch_id: str) -> dict[str, Any] | None:
    out = None
    for r in records:
        if r.value and r.key and r.key.endswith(b"/" + batch_id.encode()):
            out = orjson.loads(r.value)
    return out


def ended(batch_id: str, status: str = "completed"):
    return lambda rs: (b := latest(rs, batch_id)) is not None and b["status"] == status


def item_records(records, batch_id: str) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        if r.value and b'"batch"' in r.value:
            job = orjson.loads(r.value)
            if job.get("batch") and job["batch"]["batch_id"] == batch_id:
                out.setdefault(job["batch"]["index"], []).append(job)
    return out


def usage_of(records, batch_id: str) -> list[dict[str, Any]]:
    return [u for r in records if (u := orjson.loads(r.value)).get("batch_id") == batch_id]


async def test_requests_path_runs_every_item_bounded_and_billed_at_half_price(stack, stack_settings):
    t = topics_of(stack_settings)
    bs = stack_settings.bootstrap_servers
    config = load_config(stack_settings.config_path, stack_settings.env)
    n = 60
    async with (
        TopicTail(bs, t.batches.name) as batches,
        TopicTail(bs, t.jobs.name) as jobs,
        TopicTail(bs, t.usage.name) as usage,
    ):
        batch = await create_batch(stack_settings, n, scenario="tokens=5,ttfb_ms=30")
        await batches.until(ended(batch.batch_id), timeout=120)
        await usage.until(lambda rs: len(usage_of(rs, batch.batch_id)) >= n, timeout=60)
        final = latest(batches.records, batch.batch_id)
        assert final is not None
        assert final["path"] == "requests"
        assert final["counts"] == {"total": n, "succeeded": n, "errored": 0, "canceled": 0, "expired": 0}
        states = [
            orjson.loads(r.value)["status"] for r in batches.records if r.key == batch_key(batch).encode()
        ]
        assert states[:2] == ["validating", "in_progress"] and states[-2:] == ["finalizing", "completed"]
        items = item_records(jobs.records, batch.batch_id)
        assert sorted(items) == list(range(n))
        for recs in items.values():  # each item ended once
            assert [j["status"] for j in recs if j["status"] != "pending" and j["status"] != "running"] == [
                "completed"
            ]
        # at most max_in_flight items ran at once: an item starts (its pending record) only after
        # the service saw another end
        spans = []
        for recs in items.values():
            start = min(j["occurred_at"] for j in recs if j["status"] == "pending")
            end = next(j["finished_at"] for j in recs if j["status"] == "completed")
            spans.append((start, end))
        points = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda p: (p[0], p[1]))
        running = peak = 0
        for _, d in points:
            running += d
            peak = max(peak, running)
        assert 1 < peak <= config.batches.max_in_flight
        used = usage_of(usage.records, batch.batch_id)
        assert sorted(u["request_id"] for u in used) == sorted(item_id(batch.batch_id, i) for i in range(n))
        assert {u["custom_id"] for u in used} == {f"req-{i}" for i in range(n)}
        dep = config.models[ALIAS].deployments[0]
        from services.contracts.events import Usage

        for u in used:
            full = cost_usd(
                Usage(
                    prompt_tokens=u["prompt_tokens"],
                    completion_tokens=u["completion_tokens"],
                    total_tokens=u["total_tokens"],
                ),
                dep,
            )
            assert u["cost_usd"] == pytest.approx(full * (1 - dep.price.batch_discount), abs=1e-9)


async def test_cancel_half_way_stops_what_has_not_started(stack, stack_settings):
    t = topics_of(stack_settings)
    bs = stack_settings.bootstrap_servers
    n = 200
    async with TopicTail(bs, t.batches.name) as batches, TopicTail(bs, t.jobs.name) as jobs:
        batch = await create_batch(stack_settings, n, scenario="tokens=5,ttfb_ms=100")

        def some_done(rs) -> bool:
            b = latest(rs, batch.batch_id)
            return b is not None and b["counts"]["succeeded"] >= 20

        await batches.until(some_done, timeout=120)
        now = latest(batches.records, batch.batch_id)
        assert now is not None and now["status"] == "in_progress"
        await publish(stack_settings, moved(BatchUpdated.model_validate(now), "cancelling"))
        await batches.until(ended(batch.batch_id, "cancelled"), timeout=60)
        final = latest(batches.records, batch.batch_id)
        assert final is not None
        c = final["counts"]
        assert c["total"] == n and c["succeeded"] + c["canceled"] + c["errored"] == n
        assert 20 <= c["succeeded"] < n and c["canceled"] > 0
        items = item_records(jobs.records, batch.batch_id)
        started = len(items)
        assert started == c["succeeded"] + c["errored"]  # nothing started after the cancel was seen


async def test_kill_9_of_the_batch_service_mid_batch_ends_each_item_once(stack, stack_settings):
    t = topics_of(stack_settings)
    bs = stack_settings.bootstrap_servers
    n = 80
    async with (
        TopicTail(bs, t.batches.name) as batches,
        TopicTail(bs, t.jobs.name) as jobs,
        TopicTail(bs, t.usage.name) as usage,
    ):
        batch = await create_batch(stack_settings, n, scenario="tokens=5,ttfb_ms=60")

        def some_done(rs) -> bool:
            b = latest(rs, batch.batch_id)
            return b is not None and b["counts"]["succeeded"] >= 10

        await batches.until(some_done, timeout=120)
        await kill_and_restart(stack, "batches")
        await batches.until(ended(batch.batch_id), timeout=180)
        await usage.until(lambda rs: len(usage_of(rs, batch.batch_id)) >= n, timeout=60)
        await asyncio.sleep(1.0)  # not synchronisation: the window in which a duplicate would appear
        final = latest(batches.records, batch.batch_id)
        assert final is not None and final["counts"]["succeeded"] == n
        items = item_records(jobs.records, batch.batch_id)
        assert sorted(items) == list(range(n))
        for recs in items.values():
            assert len([j for j in recs if j["status"] == "completed"]) == 1
        used = usage_of(usage.records, batch.batch_id)
        assert len(used) == n and len({u["request_id"] for u in used}) == n


async def test_a_batch_whose_lines_are_another_tenants_fails_and_sends_none(stack, stack_settings):
    """A batch record names its lines' object; lines of another tenant are never sent as theirs."""
    t = topics_of(stack_settings)
    bs = stack_settings.bootstrap_servers
    async with TopicTail(bs, t.batches.name) as batches, TopicTail(bs, t.jobs.name) as jobs:
        batch = await create_batch(stack_settings, 5, line_tenant="restricted")
        await batches.until(ended(batch.batch_id, "failed"), timeout=60)
        final = latest(batches.records, batch.batch_id)
        assert final is not None and final["errors"][0]["line"] == 1
        assert "another tenant" in final["errors"][0]["message"]
        assert not item_records(jobs.records, batch.batch_id)

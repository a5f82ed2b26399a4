"""The provider path of batches (README "Batches"), on the whole stack: a requests file in the
stack's S3 and one ``BatchRunRequested`` on ``llm.requests``, as the batch service sends them;
the router admits the run, an executor sends the batch whole to the emulator's batch API
(OpenAI's Batch API, Anthropic's Message Batches), polls it, and writes every item's job record
on ``llm.jobs`` and usage record on ``llm.usage``.

* 1,000 chat items through each kind, and an embeddings batch: each item completed once, billed
  once at half the single price (``batch_id`` set); the run bills nothing itself.
* a cancel half-way: the provider's batch is cancelled; the items that ran are completed, the
  rest cancelled, each billed once.
* kill -9 of both executors mid-batch: one provider batch only (the emulator's list), each item
  recorded and billed once; and an executor dying half-way through the items' records: the rest
  published after its restart, each item still recorded and billed once.
* through the edge and the batch service with the official SDKs: an OpenAI batch and an
  Anthropic message batch of a batch-API alias go to the provider whole (one provider batch) and
  are answered from their items' records; an OpenAI batch cancelled half-way.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from services.contracts.events import (
    TERMINAL_JOB_STATES,
    BatchItem,
    BatchRunRequested,
    CancelRequested,
    ChatParams,
    ChatRequested,
    EmbedRequested,
    Message,
    Usage,
)
from services.runtime.batches import item_id, run_id
from services.runtime.config import load_config
from services.runtime.kafka import Publisher
from services.runtime.media.storage import S3FileStorage
from services.runtime.pricing import cost_usd
from services.runtime.topics import Topics
from tests.e2e.helpers import TopicTail
from tests.e2e.test_batches import until as until_read
from tests.e2e.test_crash_safety import _alive, component, only_executor_0, set_env, until

TENANT = "demo"
CHAT_ENDPOINT = {"demo-openai": "/v1/chat/completions", "demo-anthropic": "/v1/messages"}


class Batches:
    """Sends batches as the batch service does and reads what became of their items."""

    def __init__(
        self, settings, publisher: Publisher, storage: S3FileStorage, jobs: TopicTail, usage: TopicTail
    ):
        self.settings = settings
        self.topics = Topics.load(settings.topics_path, settings.topic_prefix)
        self.config = load_config(settings.config_path, dict(os.environ))
        self.publisher, self.storage, self.jobs, self.usage = publisher, storage, jobs, usage
        self._jobs_read = self._usage_read = 0
        self._states: dict[str, list[dict[str, Any]]] = {}
        self._by_request: dict[str, list[dict[str, Any]]] = {}
        self._by_batch: dict[str, list[dict[str, Any]]] = {}

    def chat_items(
        self, batch_id: str, model: str, n: int, scenario: str | None = None
    ) -> list[ChatRequested]:
        extra = {"emulator_scenario": scenario} if scenario else {}
        return [
            ChatRequested(
                request_id=item_id(batch_id, i),
                tenant_id=TENANT,
                user_id="e2e-user",
                api_key="demo key",
                model=model,
                job=True,
                batch=BatchItem(batch_id=batch_id, custom_id=f"line-{i}", index=i),
                messages=[Message(role="user", content=f"batch question {i}")],
                params=ChatParams(max_tokens=20, extra=extra),
            )
            for i in range(n)
        ]

    def embed_items(self, batch_id: str, n: int) -> list[EmbedRequested]:
        return [
            EmbedRequested(
                request_id=item_id(batch_id, i),
                tenant_id=TENANT,
                user_id="e2e-user",
                model="demo-embed",
                job=True,
                batch=BatchItem(batch_id=batch_id, custom_id=f"emb-{i}", index=i),
                input=[f"embed me {i}"],
            )
            for i in range(n)
        ]

    async def send(self, batch_id: str, items: list, endpoint: str) -> BatchRunRequested:
        key = f"tenants/{TENANT}/batches/{batch_id}/requests.jsonl"
        body = b"".join(item.model_dump_json().encode() + b"\n" for item in items)
        await self.storage.put(key, body, "application/jsonl")
        run = BatchRunRequested(
            request_id=run_id(batch_id),
            tenant_id=TENANT,
            user_id="e2e-user",
            model=items[0].model,
            job=True,
            batch_id=batch_id,
            endpoint=endpoint,
            requests_key=key,
            total=len(items),
            prompt_tokens=20 * len(items),
            max_output_tokens=20 * len(items),
        )
        await (await self.publisher.publish(self.topics.requests.name, run, key=TENANT))
        return run

    async def cancel(self, run: BatchRunRequested) -> None:
        event = CancelRequested(request_id=run.request_id, tenant_id=TENANT, reason="caller")
        await (await self.publisher.publish(self.topics.control.name, event, key=run.request_id))

    # --- reading back (indexed as records arrive: a thousand items are checked often) ---------------

    def _index(self) -> None:
        for r in self.jobs.records[self._jobs_read :]:
            if r.value:
                doc = orjson.loads(r.value)
                self._states.setdefault(doc["job_id"], []).append(doc)
        self._jobs_read = len(self.jobs.records)
        for r in self.usage.records[self._usage_read :]:
            if r.value:
                doc = orjson.loads(r.value)
                self._by_request.setdefault(doc["request_id"], []).append(doc)
                if doc.get("batch_id"):
                    self._by_batch.setdefault(doc["batch_id"], []).append(doc)
        self._usage_read = len(self.usage.records)

    def states(self, job_id: str) -> list[dict[str, Any]]:
        self._index()
        return [s for s in self._states.get(job_id, []) if s["tenant_id"] == TENANT]

    def ended(self, job_id: str) -> list[dict[str, Any]]:
        return [s for s in self.states(job_id) if s["status"] in TERMINAL_JOB_STATES]

    def bills(self, batch_id: str) -> list[dict[str, Any]]:
        self._index()
        return list(self._by_batch.get(batch_id, []))

    def run_bills(self, run: BatchRunRequested) -> list[dict[str, Any]]:
        self._index()
        return list(self._by_request.get(run.request_id, []))

    async def settled(self, run: BatchRunRequested, timeout: float = 180) -> None:
        """The run ended and every item has a terminal record and a usage record; then a quiet
        second, the window in which a duplicate would show (not synchronisation)."""
        ids = [item_id(run.batch_id, i) for i in range(run.total)]
        await self.jobs.until(
            lambda _: bool(self.ended(run.request_id)) and all(self.ended(i) for i in ids), timeout
        )
        await self.usage.until(
            lambda _: (
                len({u["request_id"] for u in self.bills(run.batch_id)}) == run.total
                and bool(self.run_bills(run))
            ),
            timeout,
        )
        await asyncio.sleep(1.0)

    def price_of(self, alias: str) -> Any:
        return self.config.models[alias].deployments[0]

    def check_once(self, run: BatchRunRequested) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Each item ended once and was billed once (at half the single price); the run ended
        once and billed nothing. Returns (the items' terminal records, their usage records)."""
        ends = []
        for i in range(run.total):
            got = self.ended(item_id(run.batch_id, i))
            assert len(got) == 1, got
            ends.append(got[0])
        bills = self.bills(run.batch_id)
        assert sorted(u["request_id"] for u in bills) == sorted(
            item_id(run.batch_id, i) for i in range(run.total)
        )
        dep = self.price_of(run.model)
        for u in bills:
            usage = Usage(
                prompt_tokens=u["prompt_tokens"],
                completion_tokens=u["completion_tokens"],
                units=u.get("units") or {},
            )
            assert u["cost_usd"] == pytest.approx(cost_usd(usage, dep) / 2, rel=1e-6, abs=1e-12)
            assert u["custom_id"] and u["alias"] == run.model
        [run_end] = self.ended(run.request_id)
        [run_bill] = self.run_bills(run)
        assert run_bill["cost_usd"] == 0 and run_bill["total_tokens"] == 0
        assert run_end["status"] in TERMINAL_JOB_STATES
        recorded = [s["provider_job"] for s in self.states(run.request_id) if s.get("provider_job")]
        assert recorded and {pj["id"] for pj in recorded} == {recorded[0]["id"]}  # one provider batch
        return ends, bills


@pytest.fixture
async def batches(stack, stack_settings) -> AsyncIterator[Batches]:
    topics = Topics.load(stack_settings.topics_path, stack_settings.topic_prefix)
    config = load_config(stack_settings.config_path, dict(os.environ))
    publisher = Publisher(stack_settings.bootstrap_servers, client_id="e2e-batches")
    storage = S3FileStorage(config.media.bucket, endpoint_url=stack_settings.s3_url)
    await publisher.start()
    await storage.start()
    try:
        async with (
            TopicTail(stack_settings.bootstrap_servers, topics.jobs.name) as jobs,
            TopicTail(stack_settings.bootstrap_servers, topics.usage.name) as usage,
        ):
            yield Batches(stack_settings, publisher, storage, jobs, usage)
    finally:
        await storage.aclose()
        await publisher.aclose()


async def openai_batches_of(emulator_url: str, run: BatchRunRequested) -> list[dict[str, Any]]:
    """The emulator's OpenAI batches created for ``run`` (their metadata names it)."""
    async with aiohttp.ClientSession() as s, s.get(f"{emulator_url}/v1/batches?limit=100") as r:
        assert r.status == 200
        listed = (await r.json())["data"]
    return [b for b in listed if (b.get("metadata") or {}).get("llmgw_run") == run.request_id]


async def anthropic_batch_count(emulator_url: str) -> int:
    async with aiohttp.ClientSession() as s, s.get(f"{emulator_url}/v1/messages/batches?limit=1000") as r:
        assert r.status == 200
        return len((await r.json())["data"])


def new_batch() -> str:
    return f"batch_{uuid.uuid4().hex[:12]}"


# --- whole batches ---------------------------------------------------------------------------------


async def test_a_thousand_chat_items_through_openais_batch_api(batches, emulator_url):
    batch_id = new_batch()
    run = await batches.send(
        batch_id, batches.chat_items(batch_id, "demo-openai", 1000), CHAT_ENDPOINT["demo-openai"]
    )
    await batches.settled(run)
    ends, bills = batches.check_once(run)
    assert all(e["status"] == "completed" and e["result"]["message"]["content"] for e in ends)
    assert all(e["batch"]["batch_id"] == batch_id for e in ends)
    assert sum(u["cost_usd"] for u in bills) > 0
    [created] = await openai_batches_of(emulator_url, run)
    assert created["request_counts"] == {"total": 1000, "completed": 1000, "failed": 0}
    assert batches.ended(run.request_id)[0]["status"] == "completed"


async def test_a_thousand_chat_items_through_anthropics_message_batches(batches, emulator_url):
    before = await anthropic_batch_count(emulator_url)
    batch_id = new_batch()
    items = batches.chat_items(batch_id, "demo-anthropic", 1000)
    run = await batches.send(batch_id, items, CHAT_ENDPOINT["demo-anthropic"])
    await batches.settled(run)
    ends, bills = batches.check_once(run)
    assert all(e["status"] == "completed" and e["result"]["message"]["content"] for e in ends)
    total = sum(u["cost_usd"] for u in bills)
    dep = batches.price_of("demo-anthropic")
    single = sum(
        cost_usd(Usage(prompt_tokens=u["prompt_tokens"], completion_tokens=u["completion_tokens"]), dep)
        for u in bills
    )
    assert total == pytest.approx(single / 2) and total > 0
    assert await anthropic_batch_count(emulator_url) == before + 1


async def test_an_embeddings_batch_through_openais_batch_api(batches, emulator_url):
    batch_id = new_batch()
    run = await batches.send(batch_id, batches.embed_items(batch_id, 50), "/v1/embeddings")
    await batches.settled(run)
    ends, bills = batches.check_once(run)
    assert all(e["status"] == "completed" and len(e["result"]["output"]["data"]) == 1 for e in ends)
    assert all(u["operation"] == "embed" and u["prompt_tokens"] > 0 for u in bills)
    assert len(await openai_batches_of(emulator_url, run)) == 1


# --- a cancel half-way ---------------------------------------------------------------------------------


def progressed(batches: Batches, run: BatchRunRequested, share: float) -> Callable[[list[Any]], bool]:
    def seen(_: list[Any]) -> bool:
        return any((s.get("progress") or 0) >= share for s in batches.states(run.request_id))

    return seen


@pytest.mark.parametrize("model", ["demo-openai", "demo-anthropic"])
async def test_a_cancel_half_way_stops_the_rest_at_the_provider(batches, model):
    batch_id = new_batch()
    items = batches.chat_items(batch_id, model, 200, scenario="batch_items_per_s=20")  # 10 s of work
    run = await batches.send(batch_id, items, CHAT_ENDPOINT[model])
    await batches.jobs.until(progressed(batches, run, 0.2), timeout=60)
    await batches.cancel(run)
    await batches.settled(run)
    ends, bills = batches.check_once(run)
    statuses = [e["status"] for e in ends]
    done, cancelled = statuses.count("completed"), statuses.count("cancelled")
    assert done >= 40 and cancelled >= 20 and done + cancelled == 200, statuses
    assert statuses == ["completed"] * done + ["cancelled"] * cancelled  # the first lines ran
    assert all(e["error"]["code"] == "cancelled" for e in ends if e["status"] == "cancelled")
    assert all(
        u["cost_usd"] == 0 and u["status"] == "cancelled"
        for u in bills
        if u["request_id"] in {e["job_id"] for e in ends if e["status"] == "cancelled"}
    )
    assert batches.ended(run.request_id)[0]["status"] == "cancelled"


# --- kill -9 mid-batch -----------------------------------------------------------------------------


async def test_a_batch_survives_kill_9_of_the_executors_submitted_once_billed_once(
    batches, stack, emulator_url
):
    batch_id = new_batch()
    items = batches.chat_items(batch_id, "demo-openai", 1000, scenario="batch_items_per_s=100")  # 10 s
    run = await batches.send(batch_id, items, CHAT_ENDPOINT["demo-openai"])
    await batches.jobs.until(progressed(batches, run, 0.1), timeout=60)  # submitted, being polled
    names = ("executor-0", "executor-1")
    for name in names:
        os.kill(component(stack, name).pid, signal.SIGKILL)
    assert not batches.bills(batch_id)  # nothing billed yet: the batch is still running
    for name in names:
        await asyncio.to_thread(stack.restart, name)
    await batches.settled(run, timeout=240)
    ends, _ = batches.check_once(run)
    assert all(e["status"] == "completed" for e in ends)
    [created] = await openai_batches_of(emulator_url, run)  # resumed by polling, not resubmitted
    assert created["status"] == "completed"


async def test_a_run_dying_while_it_records_its_items_bills_each_item_once(batches, stack, emulator_url):
    """The executor exits once half the items' records are acknowledged
    (``LLMGW_FAULT_EXIT_MID_BATCH``); restarted, it is given the plan again, polls the ended batch,
    and publishes only the items whose records are missing, then the run's own."""
    batch_id = new_batch()
    run_request = run_id(batch_id)
    async with only_executor_0(stack):
        set_env(stack, "executor-0", LLMGW_FAULT_EXIT_MID_BATCH=run_request)
        try:
            await asyncio.to_thread(stack.restart, "executor-0")
            pid = component(stack, "executor-0").pid
            run = await batches.send(
                batch_id, batches.chat_items(batch_id, "demo-openai", 1000), CHAT_ENDPOINT["demo-openai"]
            )
            await until(lambda: not _alive(pid), timeout=120, what="the executor's exit")
            await batches.usage.until(lambda _: len(batches.bills(batch_id)) >= 500, timeout=30)
            half = {u["request_id"] for u in batches.bills(batch_id)}
            assert 500 <= len(half) < 1000 and not batches.ended(run.request_id)
            set_env(stack, "executor-0", LLMGW_FAULT_EXIT_MID_BATCH=None)
            await asyncio.to_thread(stack.restart, "executor-0")
            await batches.settled(run, timeout=240)
        finally:
            set_env(stack, "executor-0", LLMGW_FAULT_EXIT_MID_BATCH=None)
            if not _alive(component(stack, "executor-0").pid):
                await asyncio.to_thread(stack.restart, "executor-0")
    ends, _ = batches.check_once(run)
    assert all(e["status"] == "completed" for e in ends)
    assert len(await openai_batches_of(emulator_url, run)) == 1


# --- through the edge and the batch service, with the official SDKs ---------------------------------


def sdk_line(i: int, model: str = "demo-openai", scenario: str = "tokens=5") -> dict[str, Any]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"line {i}"}],
        "max_tokens": 16,
        "emulator_scenario": scenario,
    }
    return {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}


@pytest.fixture
def oai(edge_url: str) -> Any:
    import openai

    return openai.AsyncOpenAI(api_key="sk-llmgw-demo", base_url=f"{edge_url}/v1", max_retries=0, timeout=60)


async def test_an_openai_sdk_batch_of_a_batch_api_alias_goes_to_the_provider_whole(
    oai, batches, emulator_url
):
    import openai

    n = 300
    data = b"".join(orjson.dumps(sdk_line(i)) + b"\n" for i in range(n))
    f = await oai.files.create(file=("batch.jsonl", data), purpose="batch")
    batch = await oai.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = await until_read(lambda: oai.batches.retrieve(batch.id), lambda b: b.status == "completed")
    assert done.request_counts.model_dump() == {"total": n, "completed": n, "failed": 0}
    output = [orjson.loads(x) for x in (await oai.files.content(done.output_file_id)).read().splitlines()]
    assert [o["custom_id"] for o in output] == [f"req-{i}" for i in range(n)]
    bodies = [openai.types.chat.ChatCompletion.model_validate(o["response"]["body"]) for o in output]
    assert all(b.choices[0].message.content for b in bodies)
    run = BatchRunRequested(
        request_id=run_id(batch.id),
        tenant_id=TENANT,
        model="demo-openai",
        batch_id=batch.id,
        endpoint="/v1/chat/completions",
        requests_key="-",
        total=n,
    )
    [created] = await openai_batches_of(emulator_url, run)  # the whole batch went to the provider once
    assert created["request_counts"]["total"] == n
    await batches.usage.until(lambda _: len(batches.bills(batch.id)) >= n, timeout=60)
    bills = batches.bills(batch.id)
    assert len(bills) == n and done.usage.total_tokens == sum(u["total_tokens"] for u in bills) > 0


async def test_an_openai_sdk_cancel_of_a_provider_batch(oai, batches, emulator_url):
    n = 200
    data = b"".join(orjson.dumps(sdk_line(i, scenario="batch_items_per_s=20")) + b"\n" for i in range(n))
    f = await oai.files.create(file=("batch.jsonl", data), purpose="batch")
    batch = await oai.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    run = BatchRunRequested(
        request_id=run_id(batch.id),
        tenant_id=TENANT,
        model="demo-openai",
        batch_id=batch.id,
        endpoint="/v1/chat/completions",
        requests_key="-",
        total=n,
    )
    await batches.jobs.until(progressed(batches, run, 0.2), timeout=60)
    await oai.batches.cancel(batch.id)
    done = await until_read(lambda: oai.batches.retrieve(batch.id), lambda b: b.status == "cancelled")
    c = done.request_counts
    assert c.total == n and c.completed + c.failed == n and 40 <= c.completed < n and c.failed > 0
    errors = [orjson.loads(x) for x in (await oai.files.content(done.error_file_id)).read().splitlines()]
    assert len(errors) == c.failed and {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    [created] = await openai_batches_of(emulator_url, run)
    assert created["status"] == "cancelled"


async def test_an_anthropic_sdk_message_batch_of_a_batch_api_alias_goes_to_the_provider_whole(
    edge_url, emulator_url
):
    import anthropic

    ant = anthropic.AsyncAnthropic(api_key="sk-llmgw-demo", base_url=edge_url, max_retries=0, timeout=60)
    before = await anthropic_batch_count(emulator_url)
    n = 50
    requests = [
        {
            "custom_id": f"m-{i}",
            "params": {
                "model": "demo-anthropic",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": f"hi {i}"}],
            },
        }
        for i in range(n)
    ]
    batch = await ant.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    done = await until_read(
        lambda: ant.messages.batches.retrieve(batch.id), lambda b: b.processing_status == "ended"
    )
    assert done.request_counts.succeeded == n
    results = [r async for r in await ant.messages.batches.results(batch.id)]
    assert sorted(r.custom_id for r in results) == sorted(f"m-{i}" for i in range(n))
    assert all(r.result.type == "succeeded" and r.result.message.content[0].text for r in results)
    assert await anthropic_batch_count(emulator_url) == before + 1

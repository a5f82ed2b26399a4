"""``batch.run``: a batch sent whole to a provider's batch API (README "Batches", provider path).

The lines each kind builds (the bodies single calls send), the results each kind reads, each
item's records from its outcome, and whole runs against the provider emulator in process (its
clock moved by the runner's sleeps): every item recorded once, a cancel half-way, a run resumed
after a restart polling the batch it already created, and a re-run billing nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime

import orjson
import pytest

from services.contracts.errors import Cancelled, ValidationError
from services.contracts.events import (
    TERMINAL_JOB_STATES,
    AuditRecorded,
    BatchItem,
    BatchRunRequested,
    ChatParams,
    ChatRequested,
    Deployment,
    EmbedRequested,
    ExecutionPlanned,
    JobUpdated,
    Message,
    Price,
    Usage,
    UsageRecorded,
)
from services.executor.attempts import Until
from services.executor.batch_items import item_records, parse_items
from services.executor.batch_run import BatchRunCall, BatchRunner
from services.executor.media import MediaIO
from services.executor.providers.anthropic import AnthropicAdapter
from services.executor.providers.anthropic_batches import AnthropicBatchesAdapter
from services.executor.providers.batch_base import LineResult
from services.executor.providers.openai import OpenAIAdapter
from services.executor.providers.openai_batches import OpenAIBatchesAdapter
from services.executor.providers.openai_embeddings import OpenAIEmbeddingsAdapter
from services.executor.targets import Target
from services.runtime.batches import item_id, run_id
from services.runtime.config import load_config
from services.runtime.jobs import job_state
from services.runtime.media.storage import MemoryFileStorage
from services.runtime.pricing import cost_usd
from services.runtime.settings import ROOT
from services.runtime.topics import Topics
from tests.unit.emulator.jobs_support import clocked_app
from tests.unit.providers.support import AsgiTransport

TOPICS = Topics.load(ROOT / "topics.yaml", "")
CONFIG = load_config(ROOT / "config" / "demo.yaml", {})
NO_LIMIT = Until(None, True)
PRICE = Price(input_per_mtok=0.15, output_per_mtok=0.60)
OPENAI = Target(
    alias="demo-openai",
    provider="emulator-openai",
    kind="openai",
    base_url="http://emulator/v1",
    upstream_model="gpt-emu",
    price=PRICE,
)
ANTHROPIC = Target(
    alias="demo-anthropic",
    provider="emulator-anthropic",
    kind="anthropic",
    base_url="http://emulator",
    upstream_model="claude-emu",
    price=Price(input_per_mtok=3.0, output_per_mtok=15.0),
)
EMBED = Target(
    alias="demo-embed",
    provider="emulator-openai",
    kind="openai",
    base_url="http://emulator/v1",
    upstream_model="text-embedding-emu",
    price=Price(input_per_mtok=0.02),
)
ENDPOINT = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}


def chat_item(batch_id: str, i: int, alias: str, scenario: str | None = None) -> ChatRequested:
    extra = {"emulator_scenario": scenario} if scenario else {}
    return ChatRequested(
        request_id=item_id(batch_id, i),
        tenant_id="demo",
        user_id="u1",
        api_key="demo key",
        model=alias,
        job=True,
        batch=BatchItem(batch_id=batch_id, custom_id=f"req-{i}", index=i),
        messages=[Message(role="user", content=f"question {i}")],
        params=ChatParams(max_tokens=16, extra=extra),
    )


def embed_item(batch_id: str, i: int) -> EmbedRequested:
    return EmbedRequested(
        request_id=item_id(batch_id, i),
        tenant_id="demo",
        model="demo-embed",
        job=True,
        batch=BatchItem(batch_id=batch_id, custom_id=f"e-{i}", index=i),
        input=[f"text {i}", f"more {i}"],
    )


def jsonl(items: list) -> bytes:
    return b"".join(item.model_dump_json().encode() + b"\n" for item in items)


def run_of(batch_id: str, target: Target, endpoint: str, total: int) -> BatchRunRequested:
    return BatchRunRequested(
        request_id=run_id(batch_id),
        tenant_id="demo",
        user_id="u1",
        model=target.alias,
        job=True,
        batch_id=batch_id,
        endpoint=endpoint,
        requests_key=f"tenants/demo/batches/{batch_id}/requests.jsonl",
        total=total,
    )


class Emulator(AsgiTransport):
    """The emulator in process (its clock hand-driven), with GETs, counting batch creations."""

    def __init__(self) -> None:
        self.app, self.clock = clocked_app()
        super().__init__(self.app)
        self.created = 0
        self.cancels = 0

    async def post_json(self, url, headers, body, timeout_s):
        self.created += url.endswith("/batches")
        self.cancels += url.endswith("/cancel")
        return await super().post_json(url, headers, body, timeout_s)

    async def get(self, url, headers, timeout_s):
        response = await self._client.get(url, headers=headers)
        return response.status_code, response.content

    async def get_reply(self, url, headers, timeout_s):
        response = await self._client.get(url, headers=headers)
        return response.status_code, response.headers, response.content


class Jobs:
    """``JobsView.peek`` over what the recorder published to ``llm.jobs`` (newest state wins)."""

    def __init__(self) -> None:
        self.table: dict[tuple[str, str], JobUpdated] = {}

    def apply(self, job: JobUpdated) -> None:
        old = self.table.get((job.tenant_id, job.job_id))
        if old is not None and old.status in TERMINAL_JOB_STATES:
            return
        if old is not None and job.provider_job is None:
            job = job.model_copy(update={"provider_job": old.provider_job})
        self.table[(job.tenant_id, job.job_id)] = job

    def peek(self, tenant_id: str, job_id: str) -> JobUpdated | None:
        return self.table.get((tenant_id, job_id))


class Recorder:
    """A publisher that keeps what it was given (every ack already done), feeding ``Jobs``."""

    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs
        self.sent: list[tuple[str, object]] = []

    async def publish(self, topic, event, *, key, partition=None, headers=None):
        self.sent.append((topic, event))
        if topic == TOPICS.jobs.name:
            self.jobs.apply(event)
        ack = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        return ack

    def of(self, kind: type) -> list:
        return [e for _, e in self.sent if isinstance(e, kind)]


class Runner(BatchRunner):
    """The runner, its read-back of ``llm.usage`` answered from the recorder instead of Kafka."""

    async def billed(self, req: BatchRunRequested, since: datetime) -> set[str]:
        return {u.request_id for u in self.publisher.of(UsageRecorded) if u.batch_id == req.batch_id}


class Rig:
    def __init__(self, http: Emulator) -> None:
        self.http = http
        self.jobs = Jobs()
        self.published = Recorder(self.jobs)
        self.storage = MemoryFileStorage()
        self.polls = 0
        self.on_sleep: list = []  # callbacks run on each sleep (a test's cancel, say)
        self.runner = self.new_runner()

    def new_runner(self) -> Runner:
        """A runner as a restarted executor has it: the same topics (``Jobs``), a new process."""
        return Runner(
            http=self.http,
            secret=lambda name: "sk-test",
            publisher=self.published,  # type: ignore[arg-type]
            topics=TOPICS,
            jobs=self.jobs,  # type: ignore[arg-type]
            config=CONFIG,
            media=MediaIO(CONFIG.media, self.storage, started=True),
            bootstrap_servers="unused",
            client_id="test",
            sleep=self.sleep,
        )

    async def sleep(self, seconds: float) -> None:
        self.polls += 1
        for callback in self.on_sleep:
            callback()
        self.http.clock.advance(seconds)
        await asyncio.sleep(0)

    async def put(self, run: BatchRunRequested, items: list) -> None:
        await self.storage.put(run.requests_key, jsonl(items), "application/jsonl")

    def call(self, run: BatchRunRequested, target: Target, runner: Runner | None = None) -> BatchRunCall:
        dep = Deployment(alias=target.alias, provider=target.provider, upstream_model=target.upstream_model)
        plan = ExecutionPlanned(request_id=run.request_id, tenant_id="demo", request=run, deployments=[dep])
        return (runner or self.runner).start(plan)

    def terminal(self, job_id: str) -> list[JobUpdated]:
        return [
            j for j in self.published.of(JobUpdated) if j.job_id == job_id and j.status in TERMINAL_JOB_STATES
        ]

    def usage(self, batch_id: str) -> list[UsageRecorded]:
        return [u for u in self.published.of(UsageRecorded) if u.batch_id == batch_id]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with Emulator() as http:
        yield Rig(http)


# --- lines ------------------------------------------------------------------------------------------


def test_openai_lines_are_the_bodies_single_calls_send():
    items = [chat_item("b1", i, "demo-openai") for i in range(3)]
    lines = OpenAIBatchesAdapter().lines(items, OPENAI, "/v1/chat/completions")
    assert [line["custom_id"] for line in lines] == ["0", "1", "2"]
    assert all(line["method"] == "POST" and line["url"] == "/v1/chat/completions" for line in lines)
    assert [line["body"] for line in lines] == [
        OpenAIAdapter().to_wire(i, OPENAI, stream=False) for i in items
    ]
    assert lines[0]["body"]["model"] == "gpt-emu" and "stream" not in lines[0]["body"]


def test_openai_embeddings_lines_are_the_bodies_single_calls_send():
    items = [embed_item("b2", i) for i in range(2)]
    lines = OpenAIBatchesAdapter().lines(items, EMBED, "/v1/embeddings")
    assert [line["body"] for line in lines] == [OpenAIEmbeddingsAdapter().to_wire(i, EMBED) for i in items]
    assert lines[1] == {"custom_id": "1", "method": "POST", "url": "/v1/embeddings", "body": lines[1]["body"]}
    assert lines[1]["body"]["input"] == ["text 1", "more 1"]


def test_anthropic_lines_are_messages_params_without_stream():
    items = [chat_item("b3", i, "demo-anthropic") for i in range(2)]
    lines = AnthropicBatchesAdapter().lines(items, ANTHROPIC, "/v1/messages")
    assert [line["custom_id"] for line in lines] == ["0", "1"]
    assert [line["params"] for line in lines] == [
        AnthropicAdapter().to_wire(i, ANTHROPIC, stream=False) for i in items
    ]
    assert lines[0]["params"]["model"] == "claude-emu" and "stream" not in lines[0]["params"]


# --- results ----------------------------------------------------------------------------------------


def test_openai_results_name_each_lines_outcome():
    answer = {"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}], "usage": {}}
    refused = {"error": {"message": "bad request", "type": "invalid_request_error"}}
    raw = b"\n".join(
        orjson.dumps(x)
        for x in (
            {"custom_id": "0", "response": {"status_code": 200, "body": answer}, "error": None},
            {"custom_id": "1", "response": {"status_code": 400, "body": refused}, "error": None},
            {"custom_id": "2", "response": None, "error": {"code": "batch_cancelled", "message": "c"}},
            {"custom_id": "3", "response": None, "error": {"code": "batch_expired", "message": "e"}},
        )
    )
    got = OpenAIBatchesAdapter().parse_results(raw)
    assert [(r.custom_id, r.kind, r.status) for r in got] == [
        ("0", "succeeded", 200),
        ("1", "errored", 400),
        ("2", "canceled", None),
        ("3", "expired", None),
    ]
    assert got[0].body == answer and got[1].message == "bad request"


def test_anthropic_results_name_each_lines_outcome():
    message = {"content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn", "usage": {}}
    refused = {"type": "error", "error": {"type": "invalid_request_error", "message": "too long"}}
    raw = b"\n".join(
        orjson.dumps({"custom_id": c, "result": r})
        for c, r in (
            ("2", {"type": "expired"}),
            ("0", {"type": "succeeded", "message": message}),
            ("1", {"type": "errored", "error": refused}),
            ("3", {"type": "canceled"}),
        )
    )
    got = {r.custom_id: r for r in AnthropicBatchesAdapter().parse_results(raw)}
    assert {c: r.kind for c, r in got.items()} == {
        "0": "succeeded",
        "1": "errored",
        "2": "expired",
        "3": "canceled",
    }
    assert got["0"].body == message and (got["1"].status, got["1"].message) == (400, "too long")


# --- each item's records ------------------------------------------------------------------------------


def test_a_succeeded_line_is_a_completed_job_billed_at_half_price():
    item = chat_item("b4", 0, "demo-openai")
    body = {
        "model": "gpt-emu",
        "choices": [{"message": {"content": "the answer"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
    }
    records = item_records(item, LineResult("0", "succeeded", 200, body), OPENAI, total_ms=10.0)
    assert records.job.status == "completed" and records.job.batch == item.batch
    assert records.job.result is not None and records.job.result.message.content == "the answer"
    assert records.job.result.finish_reason == "stop" and records.job.result.request_id == item.request_id
    single = cost_usd(Usage(prompt_tokens=100, completion_tokens=50, total_tokens=150), OPENAI)
    assert records.usage.cost_usd == pytest.approx(single / 2) and records.usage.cost_usd > 0
    assert (records.usage.batch_id, records.usage.custom_id, records.usage.status) == ("b4", "req-0", "ok")
    assert records.usage.api_key == "demo key" and records.usage.total_ms is None
    assert isinstance(records.audit, AuditRecorded) and records.audit.action == "completed"


@pytest.mark.parametrize(
    ("line", "status", "code"),
    [
        (LineResult("0", "errored", 400, {"error": {"message": "no"}}, "no"), "failed", "provider_error"),
        (LineResult("0", "canceled"), "cancelled", "cancelled"),
        (LineResult("0", "expired"), "failed", "batch_expired"),
        (None, "failed", "provider_error"),
    ],
)
def test_a_line_that_did_not_succeed_ends_its_job_with_its_error(line, status, code):
    item = chat_item("b5", 0, "demo-openai")
    records = item_records(item, line, OPENAI, total_ms=1.0)
    assert records.job.status == status and records.job.error is not None and records.job.error.code == code
    assert records.usage.cost_usd == 0 and records.usage.error_code == code
    assert records.usage.status == ("cancelled" if code == "cancelled" else "error")
    if line is not None and line.status == 400:  # mapped as a single call's refusal
        assert records.job.error.upstream_status == 400 and not records.job.error.retryable


def test_the_items_file_must_be_the_runs_tenants_batchs_and_alias():
    items = [chat_item("b6", i, "demo-openai") for i in range(2)]
    run = run_of("b6", OPENAI, "/v1/chat/completions", 2)
    assert [i.request_id for i in parse_items(jsonl(items), run)] == ["b6.0", "b6.1"]
    other_tenant = items[0].model_copy(update={"tenant_id": "restricted"})
    other_alias = items[1].model_copy(update={"model": "demo-anthropic"})
    with pytest.raises(ValidationError, match="another tenant"):
        parse_items(jsonl([other_tenant, items[1]]), run)
    with pytest.raises(ValidationError, match="names model"):
        parse_items(jsonl([items[0], other_alias]), run)
    with pytest.raises(ValidationError, match="1 lines, the run says 2"):
        parse_items(jsonl(items[:1]), run)


# --- whole runs against the emulator ------------------------------------------------------------------


@pytest.mark.parametrize("target", [OPENAI, ANTHROPIC], ids=["openai", "anthropic"])
async def test_a_run_records_every_item_once_and_bills_nothing_itself(rig, target):
    n = 60
    run = run_of(f"bt-{target.kind}", target, ENDPOINT[target.kind], n)
    items = [chat_item(run.batch_id, i, target.alias) for i in range(n)]
    await rig.put(run, items)
    outcome = await rig.call(run, target)(target, None, NO_LIMIT)
    assert outcome.error is None and outcome.usage == Usage()  # the run bills nothing of its own
    assert rig.http.created == 1
    running = [j for j in rig.published.of(JobUpdated) if j.job_id == run.request_id]
    assert running and running[0].provider_job["kind"] == target.kind and running[0].provider_job["id"]
    for item in items:
        [done] = rig.terminal(item.request_id)
        assert done.status == "completed" and done.result.message.content
    bills = rig.usage(run.batch_id)
    assert sorted(u.request_id for u in bills) == sorted(i.request_id for i in items)
    for u in bills:
        single = cost_usd(Usage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens), target)
        assert u.cost_usd == pytest.approx(single / 2) and u.cost_usd > 0
    assert rig.polls >= 1


async def test_an_embeddings_run_answers_each_item_with_its_vectors(rig):
    run = run_of("be", EMBED, "/v1/embeddings", 5)
    items = [embed_item("be", i) for i in range(5)]
    await rig.put(run, items)
    await rig.call(run, EMBED)(EMBED, None, NO_LIMIT)
    for item in items:
        [done] = rig.terminal(item.request_id)
        assert done.status == "completed" and len(done.result.output.data) == 2
    assert len(rig.usage("be")) == 5 and all(u.operation == "embed" for u in rig.usage("be"))


@pytest.mark.parametrize("target", [OPENAI, ANTHROPIC], ids=["openai", "anthropic"])
async def test_a_cancel_half_way_cancels_at_the_provider_and_records_both_halves(rig, target):
    n = 40
    run = run_of(f"bc-{target.kind}", target, ENDPOINT[target.kind], n)
    items = [chat_item(run.batch_id, i, target.alias, scenario="batch_items_per_s=4") for i in range(n)]
    await rig.put(run, items)
    call = rig.call(run, target)
    rig.on_sleep.append(lambda: rig.http.clock.now > 1003 and call.cancel_at_provider("caller"))
    outcome = await call(target, None, NO_LIMIT)
    assert isinstance(outcome.error, Cancelled) and rig.http.cancels == 1
    ends = [rig.terminal(i.request_id) for i in items]
    assert all(len(e) == 1 for e in ends)
    statuses = [e[0].status for e in ends]
    assert 0 < statuses.count("completed") < n and statuses.count("cancelled") == n - statuses.count(
        "completed"
    )
    assert statuses == sorted(statuses, key=lambda s: s != "completed")  # the first ones ran
    assert len(rig.usage(run.batch_id)) == n


@pytest.mark.parametrize("target", [OPENAI, ANTHROPIC], ids=["openai", "anthropic"])
async def test_a_run_again_after_a_restart_polls_its_batch_instead_of_resubmitting(rig, target):
    n = 30
    run = run_of(f"br-{target.kind}", target, ENDPOINT[target.kind], n)
    items = [chat_item(run.batch_id, i, target.alias, scenario="batch_items_per_s=5") for i in range(n)]
    await rig.put(run, items)
    polling = asyncio.Event()
    rig.on_sleep.append(lambda: rig.polls >= 2 and rig.jobs.peek("demo", run.request_id) and polling.set())
    first = asyncio.ensure_future(rig.call(run, target)(target, None, NO_LIMIT))
    await polling.wait()
    first.cancel()  # the executor dies mid-batch
    with contextlib.suppress(asyncio.CancelledError):
        await first
    assert not rig.usage(run.batch_id)
    outcome = await rig.call(run, target, rig.new_runner())(target, None, NO_LIMIT)
    assert outcome.error is None and rig.http.created == 1
    assert all(len(rig.terminal(i.request_id)) == 1 for i in items) and len(rig.usage(run.batch_id)) == n


async def test_an_openai_batch_created_but_not_recorded_is_adopted(rig):
    run = run_of("ba", OPENAI, "/v1/chat/completions", 3)
    items = [chat_item("ba", i, "demo-openai") for i in range(3)]
    await rig.put(run, items)
    await OpenAIBatchesAdapter().submit(
        rig.http, items, OPENAI, "sk", run.endpoint, run.request_id
    )  # then died
    await rig.call(run, OPENAI)(OPENAI, None, NO_LIMIT)
    assert rig.http.created == 1 and len(rig.usage("ba")) == 3


async def test_a_run_that_emitted_part_of_its_items_before_dying_publishes_only_the_rest(rig):
    n = 20
    run = run_of("bx", OPENAI, "/v1/chat/completions", n)
    items = [chat_item("bx", i, "demo-openai") for i in range(n)]
    await rig.put(run, items)
    await rig.call(run, OPENAI)(OPENAI, None, NO_LIMIT)
    # the same plan again, as after a crash between the items' records and the run's own: a new
    # process whose view holds every item's terminal record, and llm.usage every item's usage
    before = len(rig.published.sent)
    await rig.call(run, OPENAI, rig.new_runner())(OPENAI, None, NO_LIMIT)
    again = rig.published.sent[before:]
    assert not [e for _, e in again if isinstance(e, UsageRecorded | AuditRecorded)]
    assert not [e for _, e in again if isinstance(e, JobUpdated) and e.job_id != run.request_id]
    assert rig.http.created == 1 and len(rig.usage("bx")) == n


async def test_a_run_whose_usage_got_out_but_not_every_job_record_completes_the_jobs_only(rig):
    n = 10
    run = run_of("by", OPENAI, "/v1/chat/completions", n)
    items = [chat_item("by", i, "demo-openai") for i in range(n)]
    await rig.put(run, items)
    await rig.call(run, OPENAI)(OPENAI, None, NO_LIMIT)
    for item in items[5:]:  # as if these items' job records never reached llm.jobs
        rig.jobs.table[("demo", item.request_id)] = rig.jobs.table[("demo", item.request_id)].model_copy(
            update={"status": "running"}
        )
    before = len(rig.published.sent)
    await rig.call(run, OPENAI, rig.new_runner())(OPENAI, None, NO_LIMIT)
    again = [e for _, e in rig.published.sent[before:]]
    assert sorted(
        e.job_id
        for e in again
        if isinstance(e, JobUpdated) and e.status == "completed" and e.job_id != run.request_id
    ) == sorted(i.request_id for i in items[5:])
    assert not [e for e in again if isinstance(e, UsageRecorded)]


async def test_a_run_cancelled_before_it_was_sent_cancels_every_item_and_sends_nothing(rig):
    run = run_of("bn", OPENAI, "/v1/chat/completions", 4)
    items = [chat_item("bn", i, "demo-openai") for i in range(4)]
    await rig.put(run, items)
    call = rig.call(run, OPENAI)
    call.cancel_at_provider("caller")  # the cancel came with (or before) the plan
    outcome = await call(OPENAI, None, NO_LIMIT)
    assert isinstance(outcome.error, Cancelled) and rig.http.created == 0
    assert [rig.terminal(i.request_id)[0].status for i in items] == ["cancelled"] * 4
    assert len(rig.usage("bn")) == 4 and all(u.cost_usd == 0 for u in rig.usage("bn"))


async def test_a_run_that_already_ended_is_not_run_again(rig):
    run = run_of("bd", OPENAI, "/v1/chat/completions", 2)
    await rig.put(run, [chat_item("bd", i, "demo-openai") for i in range(2)])
    rig.jobs.apply(
        JobUpdated.model_validate(
            {**rig_job(run), "status": "completed", "finished_at": "2026-12-01T00:00:00Z"}
        )
    )
    before = len(rig.published.sent)
    outcome = await rig.call(run, OPENAI)(OPENAI, None, NO_LIMIT)
    assert outcome.error is None and rig.http.created == 0 and len(rig.published.sent) == before


def rig_job(run: BatchRunRequested) -> dict:
    return job_state(run, "running").model_dump(mode="json")


async def test_a_cancel_for_the_window_expires_what_never_ran_also_after_a_restart(rig):
    n = 40
    run = run_of("bw", ANTHROPIC, "/v1/messages", n)
    items = [chat_item("bw", i, "demo-anthropic", scenario="batch_items_per_s=4") for i in range(n)]
    await rig.put(run, items)
    call = rig.call(run, ANTHROPIC)
    rig.on_sleep.append(lambda: rig.http.clock.now > 1003 and call.cancel_at_provider("batch_expired"))
    cancelled_there = asyncio.Event()
    rig.on_sleep.append(lambda: rig.http.cancels and cancelled_there.set())
    first = asyncio.ensure_future(call(ANTHROPIC, None, NO_LIMIT))
    await cancelled_there.wait()
    first.cancel()  # the executor dies after cancelling at the provider
    with contextlib.suppress(asyncio.CancelledError):
        await first
    rig.on_sleep.clear()
    outcome = await rig.call(run, ANTHROPIC, rig.new_runner())(ANTHROPIC, None, NO_LIMIT)
    assert isinstance(outcome.error, Cancelled) and rig.http.cancels == 1 and rig.http.created == 1
    ends = [rig.terminal(i.request_id)[0] for i in items]
    expired = [e for e in ends if e.status == "failed"]
    assert expired and all(e.error.code == "batch_expired" for e in expired)
    assert {e.status for e in ends} == {"completed", "failed"}

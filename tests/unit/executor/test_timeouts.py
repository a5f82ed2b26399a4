"""Deadlines and retries through the executor with a scripted provider transport: ``ttft_ms`` of
a whole answer (time to the response head), a provider's ``timeout_s`` falling back while the
request has time left, ``Retry-After`` read from the answer's headers, time queued counting
against ``total_ms``, and the attempt count in the result and the usage."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Any

import orjson
import pytest

from services.contracts.events import (
    ChatRequested,
    Deployment,
    ExecutionPlanned,
    ResultProduced,
    UsageRecorded,
    new_id,
    utcnow,
)
from services.executor.app import Executor
from services.runtime.config import GatewayConfig
from services.runtime.settings import ROOT, Settings
from services.runtime.topics import Topics

ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}

CONFIG = GatewayConfig.model_validate(
    {
        "providers": {
            "slow": {"kind": "openai", "base_url": "http://slow/v1", "timeout_s": 0.2},
            "fast": {"kind": "openai", "base_url": "http://fast/v1"},
        },
        "models": {
            "slow": {"deployments": [{"provider": "slow", "model": "m"}]},
            "fast": {"deployments": [{"provider": "fast", "model": "m"}]},
            "retried": {"deployments": [{"provider": "fast", "model": "m"}], "retries": 2},
        },
        "tenants": {"t": {}},
        "defaults": {"backoff": {"initial_ms": 1, "max_ms": 5}},
    }
)


PROVIDER = {"slow": "slow", "fast": "fast", "retried": "fast"}


class Reply:
    def __init__(self, status: int, body: bytes, headers: Mapping[str, str]):
        self.status, self._body, self.headers = status, body, headers

    async def read(self) -> bytes:
        return self._body

    def lines(self) -> AsyncIterator[str]:  # pragma: no cover - whole answers only here
        raise AssertionError("not streamed")


class Scripted:
    """A provider transport answering from a script per host: ``("head_after", s)``, ``("hang",)``,
    ``(status, headers)`` for an error, or ``"ok"``; the calls made are kept."""

    def __init__(self, **by_host: list[Any]):
        self.by_host = {k: list(v) for k, v in by_host.items()}
        self.calls: list[tuple[str, float]] = []

    async def post_json(self, *a: Any, **kw: Any) -> tuple[int, bytes]:  # pragma: no cover
        raise AssertionError("the executor reads whole answers through stream_lines")

    @contextlib.asynccontextmanager
    async def stream_lines(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float | None
    ) -> AsyncIterator[Reply]:
        host = url.split("/")[2]
        self.calls.append((host, time.monotonic()))
        step = self.by_host[host].pop(0)
        if step == ("hang",):
            await asyncio.Event().wait()
        if isinstance(step, tuple) and step[0] == "head_after":
            await asyncio.sleep(step[1])
            step = "ok"
        if step == "ok":
            yield Reply(200, orjson.dumps(ANSWER), {})
            return
        status, hdrs = step
        yield Reply(status, orjson.dumps({"error": {"message": f"status {status}"}}), hdrs)

    async def aclose(self) -> None:
        pass


class Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def publish(self, topic, event, *, key, partition=None, headers=None):  # type: ignore[no-untyped-def]
        self.events.append(event)
        ack = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        return ack

    def one(self, kind: type) -> Any:
        (event,) = [e for e in self.events if isinstance(e, kind)]
        return event


@pytest.fixture
async def make():  # type: ignore[no-untyped-def]
    made: list[Executor] = []

    def build(http: Scripted) -> tuple[Executor, Recorder]:
        rec = Recorder()
        ex = Executor(
            Settings(), Topics.load(ROOT / "topics.yaml", ""), config=CONFIG, http=http, publisher=rec
        )  # type: ignore[arg-type]
        made.append(ex)
        return ex, rec

    yield build
    for ex in made:
        await ex.consumer._consumer.stop()


def plan_of(
    *aliases: str, ttft_ms: int | None = None, total_ms: int | None = 5000, **req: Any
) -> ExecutionPlanned:
    request = ChatRequested(
        request_id=new_id(),
        tenant_id="t",
        model=aliases[0],
        messages=[{"role": "user", "content": "hi"}],
        **req,
    )
    return ExecutionPlanned(
        request_id=request.request_id,
        tenant_id="t",
        request=request,
        deployments=[Deployment(alias=a, provider=PROVIDER[a], upstream_model="m") for a in aliases],
        ttft_ms=ttft_ms,
        total_ms=total_ms,
    )


async def test_ttft_ms_bounds_the_response_head_of_a_whole_answer(make):
    http = Scripted(slow=[("head_after", 1.0)], fast=["ok"])
    ex, rec = make(http)
    await ex.handle(plan_of("slow", "fast", ttft_ms=50), None)
    result = rec.one(ResultProduced)
    assert result.status == "ok" and result.fallback_used and result.provider == "fast"
    assert result.attempts == 2 and rec.one(UsageRecorded).attempts == 2
    (failed,) = rec.one(UsageRecorded).failed_attempts
    assert failed.provider == "slow" and failed.error_code == "provider_timeout"
    # a head in time is enough: the body may take longer than ttft_ms
    http = Scripted(fast=[("head_after", 0.01)])
    ex, rec = make(http)
    await ex.handle(plan_of("fast", ttft_ms=5000), None)
    assert rec.one(ResultProduced).status == "ok"


async def test_a_provider_past_its_timeout_falls_back_while_time_remains(make):
    http = Scripted(slow=[("hang",)], fast=["ok"])
    ex, rec = make(http)
    t0 = time.monotonic()
    await ex.handle(plan_of("slow", "fast", total_ms=3000), None)
    result = rec.one(ResultProduced)
    assert result.status == "ok" and result.provider == "fast" and result.attempts == 2
    assert 0.2 <= http.calls[1][1] - http.calls[0][1] < 2.5  # the slow provider got its timeout_s
    assert time.monotonic() - t0 < 2.9  # well within total_ms


async def test_no_fallback_once_the_total_deadline_has_passed(make):
    http = Scripted(fast=[("hang",)], slow=["ok"])
    ex, rec = make(http)
    await ex.handle(plan_of("fast", "slow", total_ms=150), None)
    result = rec.one(ResultProduced)
    assert result.status == "error" and result.error.code == "provider_timeout"
    assert "total_ms=150" in result.error.message and len(http.calls) == 1


async def test_retry_after_from_the_answers_headers_is_waited_for(make):
    http = Scripted(fast=[(429, {"retry-after-ms": "120"}), (503, {"Retry-After": "0"}), "ok"])
    ex, rec = make(http)
    await ex.handle(plan_of("retried"), None)
    result = rec.one(ResultProduced)
    assert result.status == "ok" and result.attempts == 3 and not result.fallback_used
    assert http.calls[1][1] - http.calls[0][1] >= 0.12
    assert rec.one(UsageRecorded).attempts == 3


async def test_the_request_may_allow_fewer_attempts(make):
    http = Scripted(fast=[(503, {}), (503, {}), "ok"])
    ex, rec = make(http)
    await ex.handle(plan_of("retried", max_attempts=2), None)
    result = rec.one(ResultProduced)
    assert result.status == "error" and result.error.upstream_status == 503 and result.attempts == 2


async def test_time_queued_counts_against_total_ms(make):
    http = Scripted(fast=["ok"])
    ex, rec = make(http)
    plan = plan_of("fast", total_ms=1000)
    plan.request.occurred_at = utcnow() - timedelta(seconds=5)  # it waited 5 s in llm.exec
    await ex.handle(plan, None)
    result = rec.one(ResultProduced)
    assert result.status == "error" and result.error.code == "provider_timeout" and not http.calls
    assert result.attempts == 0 and result.latency.queue_ms >= 5000
    http = Scripted(fast=["ok"])
    ex, rec = make(http)
    plan = plan_of("fast", total_ms=60_000)
    plan.request.occurred_at = utcnow() - timedelta(seconds=5)
    await ex.handle(plan, None)
    result = rec.one(ResultProduced)
    assert result.status == "ok" and 5000 <= result.latency.queue_ms < 6000


async def test_a_cancel_is_obeyed_only_when_it_names_the_requests_tenant(make):
    """Request ids can be chosen by callers (``x-request-id``): a cancel naming another tenant
    stops nothing, before the plan arrives or while it runs."""
    ex, rec = make(Scripted(fast=["ok"]))
    early = plan_of("fast")
    ex.cancel(early.request.request_id, "client_cancelled", "someone-else")
    await ex.handle(early, None)
    assert rec.one(ResultProduced).status == "ok"

    class Calling(Scripted):
        """Says when the provider call is under way."""

        def __init__(self) -> None:
            super().__init__(fast=[("hang",)])
            self.calling = asyncio.Event()

        def stream_lines(self, *a: Any, **kw: Any) -> Any:
            self.calling.set()
            return super().stream_lines(*a, **kw)

    http = Calling()
    ex, rec = make(http)
    running = plan_of("fast", total_ms=10_000)
    rid = running.request.request_id
    handled = asyncio.ensure_future(ex.handle(running, None))
    await http.calling.wait()
    ex.cancel(rid, "client_cancelled", "someone-else")
    assert ex._running[rid].cancelling() == 0  # not asked to stop
    ex.cancel(rid, "client_cancelled", "t")
    await handled
    result = rec.one(ResultProduced)
    assert result.status == "error" and result.error.code == "cancelled"

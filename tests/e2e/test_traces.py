"""Traces and metrics through a whole stack of their own: the services export spans over OTLP to
a receiver this module runs (``otlp_receiver.py``), and serve Prometheus metrics on the ports
``llmgw status --json`` lists.

The session's stack runs without OTLP settings, so this module starts a small stack (one router,
one executor, the media-store, the sinks and the edge, on the session's broker, under a topic
prefix of its own) with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing to the receiver.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from services.cli import infra
from services.cli.stack import Stack
from services.runtime.settings import Settings

from .otlp_receiver import OtlpReceiver, ReceivedSpan

KEY = {"authorization": "Bearer sk-llmgw-demo"}
QUESTION = "what is a trace?"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver().start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="module")
def traced(
    kafka_bootstrap: str, receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    settings = dataclasses.replace(
        Settings.from_env({}),
        bootstrap_servers=kafka_bootstrap,
        external_kafka=True,
        topic_prefix=f"tr{uuid.uuid4().hex[:6]}.",
        state_dir=Path(tmp_path_factory.mktemp("traced-stack")),
        emulator_port=infra.free_port(),
        s3_port=infra.free_port(),
        edge_port=infra.free_port(),
        log_level="WARNING",
    )
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # batches every 0.1 s: the test waits less
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
    }
    stack = Stack(settings)
    with pytest.MonkeyPatch.context() as mp:  # the stack's processes inherit this environment
        for k, v in otel.items():
            mp.setenv(k, v)
        mp.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
        mp.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
        stack.up(routers=1, executors=1, edge=True)
    try:
        yield stack
    finally:
        stack.down()


def _edge(stack: Stack) -> str:
    return next(c["endpoint"] for c in stack.status() if c["name"] == "edge")


def _trace_of(spans: list[ReceivedSpan], request_id: str) -> list[ReceivedSpan]:
    root = next(
        (s for s in spans if s.kind == "SERVER" and s.attributes.get("llmgw.request.id") == request_id), None
    )
    return [s for s in spans if root is not None and s.trace_id == root.trace_id]


def _complete(spans: list[ReceivedSpan]) -> bool:
    services = {s.service for s in spans}
    return {
        "llmgw-edge",
        "llmgw-router",
        "llmgw-executor",
        "llmgw-usage-sink",
        "llmgw-audit-sink",
    } <= services and any(s.kind == "CLIENT" for s in spans)


async def test_one_chat_request_is_one_trace_across_every_hop(traced: Stack, receiver: OtlpReceiver) -> None:
    rid = f"trace-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=_edge(traced), timeout=30) as http:
        r = await http.post(
            "/v1/chat/completions",
            headers=KEY | {"x-request-id": rid},
            json={
                "model": "demo-openai",
                "messages": [{"role": "user", "content": QUESTION}],
                "max_tokens": 50,
            },
        )
    assert r.status_code == 200, r.text
    spans = _trace_of(await _wait(receiver, lambda ss: _complete(_trace_of(ss, rid))), rid)
    by_id = {s.span_id: s for s in spans}

    def parent(s: ReceivedSpan) -> ReceivedSpan:
        assert s.parent_span_id in by_id, f"{s.name} ({s.service}) has no parent in the trace"
        return by_id[s.parent_span_id]

    # the provider call, and its ancestors hop by hop up to the edge's server span (whose context
    # the edge's publish carries: no producer span of its own inside it)
    (call,) = [s for s in spans if s.kind == "CLIENT"]
    executor = parent(call)
    router = parent(executor)
    edge = parent(router)
    assert (call.service, executor.service, router.service, edge.service) == (
        "llmgw-executor",
        "llmgw-executor",
        "llmgw-router",
        "llmgw-edge",
    )
    assert (executor.kind, router.kind, edge.kind) == ("CONSUMER", "CONSUMER", "SERVER")
    assert executor.name.endswith("llm.exec process") and router.name.endswith("llm.requests process")
    assert edge.parent_span_id == "" and edge.name == "chat demo-openai"
    assert not [s for s in spans if s.kind == "PRODUCER"]

    # GenAI conventions (v1.41 names): the provider call
    a = call.attributes
    assert call.name == f"chat {a['gen_ai.request.model']}" == "chat gpt-emu"
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.max_tokens"] == 50 and a["server.address"] == "127.0.0.1"
    assert a["gen_ai.response.model"] and a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert "gen_ai.usage.text.output_tokens" not in a  # only under gen_ai_latest_experimental
    assert json.loads(a["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": QUESTION}]}
    ]  # content is opted in for this stack
    assert json.loads(a["gen_ai.output.messages"])[0]["role"] == "assistant"
    assert a["llmgw.request.id"] == rid and a["llmgw.tenant.id"] == "demo"
    # ... and the edge's answer to its caller
    e = edge.attributes
    assert e["gen_ai.request.model"] == "demo-openai" and e["gen_ai.response.id"] == f"chatcmpl-{rid}"
    assert e["gen_ai.usage.output_tokens"] == a["gen_ai.usage.output_tokens"]
    assert e["http.route"] == "/v1/chat/completions"

    # the sinks' hops hang in the same trace, under the executor that published the records
    for sink in ("llmgw-usage-sink", "llmgw-audit-sink"):
        hops = [s for s in spans if s.service == sink]
        assert hops and all(s.kind == "CONSUMER" and parent(s).service == "llmgw-executor" for s in hops), (
            sink
        )
    assert len({s.trace_id for s in spans}) == 1


async def test_under_load_a_sinks_batch_span_reaches_every_records_trace(
    traced: Stack, receiver: OtlpReceiver
) -> None:
    """Sinks make one span per batch written: child of its first record's producer, linked to
    the others. Each of many concurrent requests' usage and audit records is reached from its
    own trace, as the parent or as a link."""
    rids = [f"trb-{uuid.uuid4().hex[:8]}" for _ in range(24)]
    body = {"model": "demo-openai", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    async with httpx.AsyncClient(base_url=_edge(traced), timeout=30) as http:
        answers = await asyncio.gather(
            *(http.post("/v1/chat/completions", headers=KEY | {"x-request-id": r}, json=body) for r in rids)
        )
    assert [a.status_code for a in answers] == [200] * len(rids)

    def reached(spans: list[ReceivedSpan], sink: str) -> dict[str, bool]:
        out = {}
        for rid in rids:
            own = {s.span_id for s in _trace_of(spans, rid)}
            out[rid] = any(
                s.service == sink and (s.parent_span_id in own or any(sid in own for _, sid in s.links))
                for s in spans
            )
        return out

    def done(spans: list[ReceivedSpan]) -> bool:
        return all(all(reached(spans, sink).values()) for sink in ("llmgw-usage-sink", "llmgw-audit-sink"))

    spans = await _wait(receiver, done)
    batches = [
        s
        for s in spans
        if s.service == "llmgw-usage-sink" and s.attributes.get("messaging.batch.message_count")
    ]
    assert all(s.kind == "CONSUMER" and s.name.endswith("llm.usage process") for s in batches)
    # concurrent records share batches (a window of the sink's batch_ms); a batch of n: a parent, n - 1 links
    assert any(s.attributes["messaging.batch.message_count"] > 1 for s in batches)
    assert all(len(s.links) == s.attributes["messaging.batch.message_count"] - 1 for s in batches)


async def test_every_service_serves_its_metrics_on_the_port_status_lists(traced: Stack) -> None:
    comps = {c["name"]: c for c in traced.status()}
    services = ["router-0", "executor-0", "media-store", "usage-sink", "audit-sink", "edge"]
    assert all(comps[n]["metrics"].endswith("/metrics") for n in services)
    assert comps["s3"]["metrics"] is None and comps["emulator"]["metrics"] is None  # not services
    async with httpx.AsyncClient(base_url=_edge(traced), timeout=30) as http:
        r = await http.post(
            "/v1/chat/completions",
            headers=KEY,
            json={"model": "demo-openai", "messages": [{"role": "user", "content": "count me"}]},
        )
        assert r.status_code == 200, r.text
        texts = {n: (await http.get(comps[n]["metrics"])).text for n in services}
        edge_route = await http.get("/metrics")
    for name, text in texts.items():
        assert 'llmgw_build_info{metrics_version="1"' in text, name
        assert "llmgw_consumer_lag_records" in text, name
    ok = {"operation": "chat", "alias": "demo-openai", "provider": "emulator-openai", "outcome": "ok"}
    assert _sample(texts["executor-0"], "llmgw_requests_total", ok) >= 1
    assert "llmgw_gateway_overhead_seconds_count" in texts["edge"]
    assert edge_route.status_code == 200 and "llmgw_gateway_overhead_seconds_count" in edge_route.text
    assert "text/plain" in edge_route.headers["content-type"]
    assert "demo" not in _label_values(texts["executor-0"])  # the tenant is no label value


def _samples(text: str) -> list[Sample]:
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def _sample(text: str, name: str, labels: dict[str, str]) -> float:
    return sum(s.value for s in _samples(text) if s.name == name and s.labels == labels)


def _label_values(text: str) -> set[str]:
    return {v for s in _samples(text) for v in s.labels.values()}


async def _wait(receiver: OtlpReceiver, done: Callable[[list[ReceivedSpan]], bool]) -> list[ReceivedSpan]:
    return await asyncio.to_thread(receiver.wait_for, done, 30.0)

"""The request log over the whole stack: one JSON line per request outcome on the standard output
of the service that decided it (``llmgw up`` keeps each process's output in
``<state dir>/logs/<name>.log``, beside its log records): the executor for a request it ran, the
router for one it refused, the edge for its own 401."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from services.contracts.errors import RequestBlocked
from services.contracts.events import new_id
from tests.support import eventually


def lines(state_dir: Path, prefix: str) -> list[dict]:
    """Request-log lines of every process whose name starts with ``prefix``."""
    out = []
    for log in sorted((state_dir / "logs").glob(f"{prefix}*.log")):
        for raw in log.read_bytes().splitlines():
            if raw.startswith(b'{"log":"request"'):
                out.append(orjson.loads(raw))
    return out


def of(state_dir: Path, prefix: str, request_id: str) -> list[dict]:
    return [ln for ln in lines(state_dir, prefix) if ln["request_id"] == request_id]


async def test_an_executed_request_has_one_line_from_an_executor(gw, stack_settings) -> None:
    rid = new_id()
    result = await gw.chat(
        model="demo-openai",
        messages=[{"role": "user", "content": "log me"}],
        request_id=rid,
        client_id="billing-svc",
    )
    state = stack_settings.state_dir
    await eventually(lambda: bool(of(state, "executor", rid)), within=10)
    (line,) = of(state, "", rid)  # no other process logged it
    assert (line["service"], line["tenant"], line["user"], line["client_id"]) == (
        "executor",
        "demo",
        "e2e-user",
        "billing-svc",
    )
    assert (line["model"], line["provider"], line["status"], line["error"]) == (
        "demo-openai",
        "emulator-openai",
        "ok",
        None,
    )
    assert line["total_tokens"] == result.usage.total_tokens and line["cost_usd"] > 0
    assert line["latency_ms"] > 0 and line["ts"].endswith("Z")


async def test_a_refused_request_has_its_line_from_a_router(stack_settings, stack) -> None:
    from services.client import GatewayClient

    rid = new_id()
    async with GatewayClient(
        stack_settings.bootstrap_servers,
        "guarded",
        "g-user",
        topic_prefix=stack_settings.topic_prefix,
        timeout_s=30,
    ) as guarded:
        with pytest.raises(RequestBlocked):
            await guarded.chat(
                model="demo-openai", messages=[{"role": "user", "content": "forbidden-topic"}], request_id=rid
            )
    state = stack_settings.state_dir
    await eventually(lambda: bool(of(state, "router", rid)), within=10)
    (line,) = of(state, "", rid)
    assert (line["service"], line["tenant"], line["status"], line["error"]) == (
        "router",
        "guarded",
        "error",
        "request_blocked",
    )
    assert line["provider"] is None and line["total_tokens"] is None


async def test_the_edge_logs_its_own_401(edge_url, stack_settings) -> None:
    rid = f"log-401-{new_id()[:8]}"
    async with httpx.AsyncClient(base_url=edge_url, timeout=30) as http:
        r = await http.get("/v1/models", headers={"x-request-id": rid})
    assert r.status_code == 401
    state = stack_settings.state_dir
    await eventually(lambda: bool(of(state, "edge", rid)), within=10)
    (line,) = of(state, "", rid)
    assert (line["service"], line["tenant"], line["http_status"], line["error"], line["operation"]) == (
        "edge",
        "unknown",
        401,
        "authentication_error",
        "models.list",
    )

"""The request log's line, its switch, and the executor writing one line per request it ran."""

from __future__ import annotations

import io

import orjson

from services.contracts.events import UsageRecorded
from services.runtime.request_log import RequestLog
from services.runtime.settings import Settings

KEYS = [
    "log",
    "ts",
    "service",
    "request_id",
    "tenant",
    "user",
    "api_key",
    "client_id",
    "operation",
    "model",
    "provider",
    "status",
    "error",
    "http_status",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "latency_ms",
]


def test_one_json_line_per_outcome_with_every_key() -> None:
    out = io.StringIO()
    log = RequestLog("executor", out=out)
    usage = UsageRecorded(
        request_id="r1",
        tenant_id="t",
        user_id="u",
        status="ok",
        alias="demo-openai",
        provider="emulator-openai",
        client_id="c",
        prompt_tokens=5,
        completion_tokens=3,
        total_tokens=8,
        cost_usd=0.0000021,
        total_ms=12.34567,
    )
    log.executed(usage, api_key="demo key")
    log.outcome(
        request_id="r2", tenant="unknown", status="error", error="authentication_error", http_status=401
    )
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (orjson.loads(line) for line in lines)
    assert list(first) == KEYS and list(second) == KEYS
    assert first["log"] == "request" and first["service"] == "executor" and first["ts"].endswith("Z")
    assert {
        k: first[k] for k in ("tenant", "user", "api_key", "client_id", "model", "provider", "status")
    } == {
        "tenant": "t",
        "user": "u",
        "api_key": "demo key",
        "client_id": "c",
        "model": "demo-openai",
        "provider": "emulator-openai",
        "status": "ok",
    }
    assert (first["total_tokens"], first["cost_usd"], first["latency_ms"]) == (8, 0.0000021, 12.346)
    assert (second["error"], second["http_status"], second["prompt_tokens"]) == (
        "authentication_error",
        401,
        None,
    )


def test_switched_off() -> None:
    out = io.StringIO()
    log = RequestLog("router", enabled=False, out=out)
    log.outcome(request_id="r", tenant="t", status="ok")
    assert out.getvalue() == ""
    assert Settings.from_env({}).request_log is True
    for off in ("0", "false", "off"):
        assert Settings.from_env({"LLMGW_REQUEST_LOG": off}).request_log is False
    assert RequestLog.of(Settings.from_env({"LLMGW_REQUEST_LOG": "0"}), "edge").enabled is False

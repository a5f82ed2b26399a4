"""The edge's own refusals (401, 413, 400 before the pipeline) become ``blocked`` audit records
(actor ``edge``, never the key) and request-log lines; what the pipeline answered does not, and
served requests record nothing here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from services.contracts.errors import ValidationError
from services.contracts.events import AuditRecorded
from services.edge.app import create_app
from services.edge.auth import KeyIndex
from services.edge.settings import EdgeSettings
from services.runtime.config import load_config
from services.runtime.settings import ROOT, Settings
from tests.unit.edge.conftest import FakePipeline

KEY = "sk-llmgw-guarded"
BODY = {"model": "demo-openai", "messages": [{"role": "user", "content": "hi"}]}


class Audits:
    def __init__(self) -> None:
        self.events: list[AuditRecorded] = []

    async def __call__(self, event: AuditRecorded) -> asyncio.Future[object]:
        self.events.append(event)
        ack = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        return ack


@pytest.fixture
def audits() -> Audits:
    return Audits()


@pytest.fixture
def pipeline() -> FakePipeline:
    return FakePipeline()


@pytest.fixture
async def http(audits, pipeline) -> AsyncIterator[httpx.AsyncClient]:
    settings = EdgeSettings(runtime=Settings(), max_body_bytes=1024)
    app = create_app(
        settings, config=load_config(ROOT / "config" / "demo.yaml", env={}), pipeline=pipeline, audit=audits
    )
    await app.startup()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as client:
        yield client


def log_lines(capsys) -> list[dict]:  # type: ignore[no-untyped-def]
    return [
        orjson.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith('{"log":"request"')
    ]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing API key"),
        ({"authorization": "Bearer sk-wrong"}, "invalid API key"),
        ({"authorization": "Basic abc"}, "malformed Authorization header"),
    ],
)
async def test_401_is_audited_under_the_unknown_tenant(http, audits, capsys, headers, reason) -> None:
    capsys.readouterr()
    r = await http.post("/v1/chat/completions", json=BODY, headers={**headers, "x-request-id": "rej-1"})
    assert r.status_code == 401
    (event,) = audits.events
    assert (event.action, event.actor, event.tenant_id, event.user_id) == ("blocked", "edge", "unknown", None)
    assert (event.error_code, event.operation, event.request_id) == ("authentication_error", "chat", "rej-1")
    assert event.reason is not None and event.reason.startswith(reason) and "sk-wrong" not in event.reason
    (line,) = log_lines(capsys)
    assert (line["service"], line["tenant"], line["http_status"], line["error"]) == (
        "edge",
        "unknown",
        401,
        "authentication_error",
    )


async def test_413_and_400_name_the_callers_tenant(http, audits, capsys) -> None:
    auth = {"authorization": f"Bearer {KEY}"}
    capsys.readouterr()
    r = await http.post("/v1/embeddings", content=b"x" * 2048, headers=auth)
    assert r.status_code == 413
    r = await http.post("/v1/chat/completions", content=b"{not json", headers=auth)
    assert r.status_code == 400
    r = await http.post(
        "/v1/chat", json={"model": "demo-openai", "messages": "nope", "client_id": "c9"}, headers=auth
    )
    assert r.status_code == 400
    codes = [(e.error_code, e.operation, e.tenant_id, e.user_id) for e in audits.events]
    assert codes == [
        ("payload_too_large", "embed", "guarded", "guarded-user"),
        ("validation_error", "chat", "guarded", "guarded-user"),
        ("validation_error", "chat", "guarded", "guarded-user"),
    ]
    assert audits.events[2].client_id == "c9"
    caller = KeyIndex(load_config(ROOT / "config" / "demo.yaml", env={})).authenticate(
        f"Bearer {KEY}".encode()
    )
    name = getattr(caller, "key", None)  # the key's configured name, when the caller carries it
    assert [(ln["http_status"], ln["api_key"]) for ln in log_lines(capsys)] == [
        (413, name),
        (400, name),
        (400, name),
    ]


async def test_served_requests_and_the_pipelines_own_errors_are_not_recorded_here(
    http, audits, pipeline, capsys
) -> None:
    auth = {"authorization": f"Bearer {KEY}"}
    capsys.readouterr()
    assert (await http.post("/v1/chat/completions", json=BODY, headers=auth)).status_code == 200
    pipeline.answer = lambda req: ValidationError("max_tokens=1 exceeds the limit", param="max_tokens")
    assert (await http.post("/v1/chat/completions", json=BODY, headers=auth)).status_code == 400
    assert audits.events == [] and log_lines(capsys) == []

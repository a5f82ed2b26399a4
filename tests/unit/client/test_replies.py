"""The SDK's reply handler: a reply it cannot read still answers the waiting call."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson

from services.client import GatewayClient
from services.contracts.events import ResultProduced


async def test_an_unreadable_reply_becomes_an_internal_error_for_its_caller():
    gw = GatewayClient("127.0.0.1:1", "t1")
    future_output = {
        "type": "llm.result.v1",
        "request_id": "r1",
        "tenant_id": "t1",
        "status": "ok",
        "operation": "image.generate",
        "output": {"kind": "images", "data": []},
    }
    q: asyncio.Queue = asyncio.Queue()
    gw._waiting["r1"] = q
    for r in (
        SimpleNamespace(key=b"r0", value=b"not for anyone waiting", topic="replies", offset=0),
        SimpleNamespace(key=b"r1", value=orjson.dumps(future_output), topic="replies", offset=1),
    ):
        gw._on_reply(r)  # type: ignore[arg-type]
    answer = q.get_nowait()
    assert isinstance(answer, ResultProduced) and answer.status == "error"
    assert answer.error.code == "internal_error" and "could not be read" in answer.error.message
    assert q.empty()  # r0's bad reply went to nobody

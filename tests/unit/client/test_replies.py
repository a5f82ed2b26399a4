"""The SDK's reply handler: a reply it cannot read still answers the waiting call, and is
reported ``Malformed`` (its tail dead-letters it); another call's reply is not even decoded."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson
import pytest

from services.client import GatewayClient
from services.contracts.events import ResultProduced
from services.runtime.tail import Malformed


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
    other = SimpleNamespace(key=b"r0", value=b"not for anyone waiting", topic="replies", offset=0)
    gw._on_reply(other)  # type: ignore[arg-type]  # not decoded: nothing raised
    bad = SimpleNamespace(key=b"r1", value=orjson.dumps(future_output), topic="replies", offset=1)
    with pytest.raises(Malformed) as raised:
        gw._on_reply(bad)  # type: ignore[arg-type]
    assert raised.value.reason.startswith("reply: ") and "output" in raised.value.reason, raised.value.reason
    answer = q.get_nowait()
    assert isinstance(answer, ResultProduced) and answer.status == "error"
    assert answer.error.code == "internal_error" and "could not be read" in answer.error.message
    assert q.empty()  # r0's bad reply went to nobody

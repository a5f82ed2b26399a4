"""The SDK's reply reader: a reply it cannot read still answers the waiting call."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson

from services.client import GatewayClient
from services.contracts.events import ResultProduced


class OneBatch:
    """Stands in for the reply consumer: one batch of records, then nothing more."""

    def __init__(self, records):
        self._records = records

    async def getmany(self, timeout_ms: int):
        if self._records is None:
            await asyncio.Event().wait()
        records, self._records = self._records, None
        return {"tp": records}


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
    gw._replies = OneBatch(
        [
            SimpleNamespace(key=b"r0", value=b"not for anyone waiting", topic="replies", offset=0),
            SimpleNamespace(key=b"r1", value=orjson.dumps(future_output), topic="replies", offset=1),
        ]
    )
    q: asyncio.Queue = asyncio.Queue()
    gw._waiting["r1"] = q
    reader = asyncio.create_task(gw._read())
    try:
        answer = await asyncio.wait_for(q.get(), 5)
    finally:
        reader.cancel()
    assert isinstance(answer, ResultProduced) and answer.status == "error"
    assert answer.error.code == "internal_error" and "could not be read" in answer.error.message
    assert q.empty()  # r0's bad reply went to nobody

"""What the executor publishes for one request, and how it reaches the producer.

``BatchingPublisher`` sends, like aiokafka's sender, everything enqueued before its next
loop turn as one produce request. No broker: the outputs' order and grouping is the
executor's doing, and the real broker tests (``tests/e2e/test_audit.py``) cover delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from types import SimpleNamespace

import orjson

from services.contracts.events import ChatParams, ChatRequested, new_id
from services.executor.app import Executor
from services.router.handlers import plan
from services.runtime.config import load_config
from services.runtime.settings import ROOT, Settings
from services.runtime.topics import Topics

ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}


class Answer:
    status, headers = 200, {"content-type": "application/json"}

    async def read(self) -> bytes:
        return orjson.dumps(ANSWER)

    def lines(self):  # pragma: no cover - not streamed here
        raise AssertionError("not streamed")


class Answers:
    """An ``HttpTransport`` that answers every POST at once with ``ANSWER``."""

    async def post_json(self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float | None):
        return 200, orjson.dumps(ANSWER)

    @contextlib.asynccontextmanager
    async def stream_lines(self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float | None):
        yield Answer()

    async def aclose(self) -> None:
        pass


class BatchingPublisher:
    def __init__(self) -> None:
        self.requests: list[list[tuple[str, str]]] = []
        self.markers: list[tuple[int | None, str, int, int, str]] = []
        self._pending: list[tuple[str, str]] = []

    def _send(self) -> None:
        self.requests.append(self._pending)
        self._pending = []

    async def publish(self, topic, event, *, key, partition=None, headers=None):
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._send)
        self._pending.append((topic, getattr(event, "action", None) or event.type))
        if event.type == "llm.finished.v1":
            self.markers.append((partition, key, event.exec_partition, event.exec_offset, event.status))
        ack = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        return ack


async def test_a_short_requests_outputs_share_one_produce_request():
    """Result, usage, ``started``, ``completed`` and the ``llm.finished`` marker are enqueued
    without a loop turn between them: one produce request (and one ack) instead of two for each
    short request, and the marker travels with the outputs it vouches for."""
    settings = Settings()
    topics = Topics.load(ROOT / "topics.yaml", "")
    config = load_config(settings.config_path, settings.env)
    tenant = next(iter(config.tenants))
    req = ChatRequested(
        request_id=new_id(),
        tenant_id=tenant,
        model="mock-gpt",
        messages=[{"role": "user", "content": "hi"}],
        params=ChatParams(),
    )
    publisher = BatchingPublisher()
    executor = Executor(settings, topics, http=Answers(), publisher=publisher)  # type: ignore[arg-type]
    try:
        await executor.handle(plan(req, config), SimpleNamespace(partition=3, offset=41))  # type: ignore[arg-type]
        await asyncio.sleep(0)
    finally:  # never started: closing only releases it
        await executor.consumer._consumer.stop()
    assert publisher.requests == [
        [
            (topics.results.name, "llm.result.v1"),
            (topics.usage.name, "llm.usage.v1"),
            (topics.audit.name, "started"),
            (topics.audit.name, "completed"),
            (topics.finished.name, "llm.finished.v1"),
        ]
    ]
    assert publisher.markers == [(3, req.request_id, 3, 41, "ok")]

"""The edge app in-process, on a fake pipeline (no broker): ``FakePipeline`` builds request
events with the SDK's own ``build_request`` and answers from a script."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.client import GatewayClient
from services.contracts.errors import GatewayError
from services.contracts.events import (
    AssistantMessage,
    ChatRequested,
    ChunkEmitted,
    Delta,
    Latency,
    ModelFilter,
    ModelInfo,
    ModelsListRequested,
    ResultProduced,
    Usage,
    new_id,
)
from services.edge.app import EdgeApp, create_app
from services.edge.pipeline import EdgeClient
from services.edge.settings import EdgeSettings
from services.router.discovery import models_result
from services.runtime.config import load_config
from services.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
DEMO_KEY = "sk-llmgw-demo"
RESTRICTED_KEY = "sk-llmgw-restricted"
AUTH = {"authorization": f"Bearer {DEMO_KEY}"}


def ok_result(req: ChatRequested, text: str = "hello there", provider_ms: float = 5.0) -> ResultProduced:
    return ResultProduced(
        request_id=req.request_id,
        tenant_id=req.tenant_id,
        user_id=req.user_id,
        status="ok",
        message=AssistantMessage(content=text),
        finish_reason="stop",
        alias=req.model,
        provider="emulator-openai",
        model="gpt-emu",
        usage=Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5),
        latency=Latency(ttft_ms=provider_ms, total_ms=provider_ms + 1, provider_ms=provider_ms),
    )


def chunks_for(req: ChatRequested, pieces: list[str]) -> list[ChunkEmitted]:
    ids = {"request_id": req.request_id, "tenant_id": req.tenant_id}
    out = [
        ChunkEmitted(
            **ids,
            seq=i,
            delta=Delta(role="assistant" if i == 0 else None, content=p),
            model="gpt-emu" if i == 0 else None,
        )
        for i, p in enumerate(pieces)
    ]
    out.append(
        ChunkEmitted(
            **ids,
            seq=len(pieces),
            final=True,
            finish_reason="stop",
            usage=Usage(prompt_tokens=3, completion_tokens=len(pieces), total_tokens=3 + len(pieces)),
        )
    )
    return out


@dataclasses.dataclass
class FakePipeline:
    """Answers requests from ``answer`` (a ``ResultProduced`` or a ``GatewayError`` to raise) and
    streams from ``chunks`` (chunk events, ``GatewayError``s to raise, or float pauses in seconds).
    Records requests and cancels like the SDK does (a stream closed early is cancelled)."""

    answer: Callable[[ChatRequested], ResultProduced | GatewayError] = ok_result
    chunks: Callable[[ChatRequested], list[Any]] = lambda req: chunks_for(req, ["hel", "lo"])
    tenant_id: str = "edge"
    user_id: str | None = None
    client_id: str | None = None
    reply_to: Any = None
    requests: list[ChatRequested] = dataclasses.field(default_factory=list)
    cancels: list[str] = dataclasses.field(default_factory=list)
    model_lists: list[tuple[str, str | None]] = dataclasses.field(default_factory=list)
    closed: bool = False

    build_request = GatewayClient.build_request
    request = EdgeClient.request

    async def result(self, req: ChatRequested, timeout: float) -> ResultProduced:
        self.requests.append(req)
        out = self.answer(req)
        if isinstance(out, GatewayError):
            raise out
        return out

    async def stream(self, req: ChatRequested, timeout: float) -> AsyncIterator[ChunkEmitted]:
        self.requests.append(req)
        finished = False
        try:
            for item in self.chunks(req):
                if isinstance(item, float):
                    await asyncio.sleep(item)
                elif isinstance(item, GatewayError):
                    finished = True
                    raise item
                else:
                    yield item
                    if item.final:
                        finished = True
                        return
        finally:
            if not finished:
                await self.cancel(req.request_id)

    async def cancel(self, request_id: str, reason: str = "client_cancelled") -> None:
        self.cancels.append(request_id)

    async def models(self, caller: Any, model: str | None, timeout: float) -> list[ModelInfo]:
        """The router's own answer to ``models.list`` on the demo configuration."""
        self.model_lists.append((caller.tenant_id, model))
        req = ModelsListRequested(
            request_id=new_id(),
            tenant_id=caller.tenant_id,
            user_id=caller.user_id,
            filter=ModelFilter(model=model),
        )
        out = models_result(load_config(ROOT / "config" / "demo.yaml", env={}), req).output
        assert out is not None and out.kind == "models"
        return out.models

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture(scope="session")
def demo_config():
    return load_config(ROOT / "config" / "demo.yaml", env={})


@pytest.fixture
def pipeline() -> FakePipeline:
    return FakePipeline()


@pytest.fixture
def edge_settings() -> EdgeSettings:
    return EdgeSettings(runtime=Settings(), keepalive_s=10.0)


@pytest.fixture
async def app(edge_settings, demo_config, pipeline) -> EdgeApp:
    app = create_app(edge_settings, config=demo_config, pipeline=pipeline)
    await app.startup()
    return app


@pytest.fixture
async def http(app) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as client:
        yield client


class AsgiCall:
    """Drive one HTTP request through the app by hand: control disconnects and slow reads."""

    def __init__(
        self, app: EdgeApp, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ):
        self.app = app
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "scheme": "http",
            "server": ("edge", 80),
            "client": ("test", 1),
            "headers": [(k.lower().encode(), v.encode()) for k, v in {**AUTH, **(headers or {})}.items()],
        }
        self.body = body
        self.sent: list[dict[str, Any]] = []
        self.disconnect = asyncio.Event()
        self.body_read = False
        self.send_gate: asyncio.Event | None = None  # when set (cleared), send blocks: a slow reader
        self.new_message = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        if not self.body_read:
            self.body_read = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if self.send_gate is not None and message["type"] == "http.response.body":
            await self.send_gate.wait()
        self.sent.append(message)
        self.new_message.set()

    def start(self) -> asyncio.Task[None]:
        return asyncio.create_task(self.app(self.scope, self.receive, self.send))

    @property
    def status(self) -> int | None:
        return next((m["status"] for m in self.sent if m["type"] == "http.response.start"), None)

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(next((m["headers"] for m in self.sent if m["type"] == "http.response.start"), []))

    @property
    def data(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")

    @property
    def complete(self) -> bool:
        return any(m["type"] == "http.response.body" and not m.get("more_body") for m in self.sent)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.new_message.clear()
                await self.new_message.wait()

"""A tiny OTLP/HTTP trace receiver: ``POST /v1/traces`` with an ``application/x-protobuf``
``ExportTraceServiceRequest`` (plain or gzip), decoded with opentelemetry-proto's classes.

In tests (``OtlpReceiver``) it runs on its own thread and event loop, so a test may block (a
stack starting) while services export, and keeps every span as a ``ReceivedSpan``;
``wait_for(predicate)`` returns as soon as the spans received satisfy it (no polling sleeps).

As a program (``python -m tests.e2e.otlp_receiver --port 4318``) it is a collector that counts
and drops: somewhere for the services to export to in a benchmark arm, printing the count of
spans received every ``--every`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

PROTOBUF = "application/x-protobuf"
KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


@dataclass
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    kind: str
    service: str
    attributes: dict[str, Any] = field(default_factory=dict)
    status_code: int = 0
    links: list[tuple[str, str]] = field(default_factory=list)  # (trace id, span id) of each


def value_of(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [value_of(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which) if which else None


def decode(body: bytes) -> list[ReceivedSpan]:
    """The spans of one ``ExportTraceServiceRequest``."""
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    out = []
    for rs in req.resource_spans:
        resource = {kv.key: value_of(kv.value) for kv in rs.resource.attributes}
        service = str(resource.get("service.name", ""))
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(
                    ReceivedSpan(
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        name=s.name,
                        kind=KINDS.get(s.kind, str(s.kind)),
                        service=service,
                        attributes={kv.key: value_of(kv.value) for kv in s.attributes},
                        status_code=s.status.code,
                        links=[(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                    )
                )
    return out


def _body(raw: bytes) -> bytes:
    """The request body: aiohttp undoes ``content-encoding: gzip`` itself; a gzip body sent
    without saying so is undone here."""
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


class OtlpReceiver:
    """Receives on ``127.0.0.1:port`` (a free one by default) from ``start`` to ``stop``;
    ``keep=False`` counts export requests without decoding them."""

    def __init__(self, port: int = 0, keep: bool = True):
        self.port = port
        self.keep = keep
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.headers: list[dict[str, str]] = []  # each request's headers
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """The base URL (``OTEL_EXPORTER_OTLP_ENDPOINT``)."""
        return f"http://127.0.0.1:{self.port}"

    async def _traces(self, request: web.Request) -> web.Response:
        raw = _body(await request.read())
        spans = decode(raw) if self.keep else []
        with self._cond:
            self.requests += 1
            self.headers.append({k.lower(): v for k, v in request.headers.items()})
            self.spans.extend(spans)
            self._cond.notify_all()
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(), content_type=PROTOBUF)

    async def _serve(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()

    def _main(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        if self._runner is not None:
            loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def start(self) -> OtlpReceiver:
        if self.port == 0:
            from services.cli import infra

            self.port = infra.free_port()
        self._thread = threading.Thread(target=self._main, name="otlp-receiver", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def wait_for(self, done: Callable[[list[ReceivedSpan]], bool], timeout: float) -> list[ReceivedSpan]:
        """The spans received, once ``done(spans)`` holds; ``TimeoutError`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not done(self.spans):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.spans)} spans received, not the ones awaited")
                self._cond.wait(left)
            return list(self.spans)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.e2e.otlp_receiver", description=__doc__)
    ap.add_argument("--port", type=int, default=4318)
    ap.add_argument("--every", type=float, default=10.0, help="seconds between counts printed")
    args = ap.parse_args(argv)
    receiver = OtlpReceiver(args.port, keep=False).start()
    print(f"OTLP/HTTP receiver on {receiver.url}/v1/traces (counting, dropping)", flush=True)
    try:
        while True:
            time.sleep(args.every)
            print(f"{receiver.requests} export requests received", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

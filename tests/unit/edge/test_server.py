"""The edge's HTTP protocol joins the writes of one loop turn (a response's head and body),
and cancels a request's wait for its answer when its client hangs up."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvicorn

from services.edge.asgi import DISCONNECT_HOOK, ClientGone, Request
from services.edge.server import EdgeHttpProtocol, _Coalescing


class Recording:
    """The transport underneath: records what reaches the socket."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed


async def next_turn() -> None:
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(done.set_result, None)
    await done


async def test_a_head_and_body_written_in_one_turn_leave_as_one_write() -> None:
    raw = Recording()
    t = _Coalescing(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    t.write(b"{}")
    assert raw.writes == [] and t.get_write_buffer_size() == 40
    await next_turn()
    assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    t.write(b"data: 1\n\n")  # a later stream event: its own write, in its own turn
    await next_turn()
    assert raw.writes[1:] == [b"data: 1\n\n"]
    assert t.is_closing() is False  # everything else is the transport's own


async def test_close_sends_what_is_pending_and_abort_drops_it() -> None:
    raw = Recording()
    t = _Coalescing(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"last")
    t.close()
    assert raw.writes == [b"last"] and raw.closed
    await next_turn()
    assert raw.writes == [b"last"]  # not sent twice

    raw = Recording()
    t = _Coalescing(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"dropped")
    t.abort()
    await next_turn()
    assert raw.writes == [] and raw.aborted


# --- disconnects --------------------------------------------------------------------------------


class _Waits:
    """An ASGI app whose every request waits for an answer that never comes, through
    ``Request.until_disconnect``; it records how each wait ended."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()
        self.events: list[str] = []
        self.ended = asyncio.Event()

    async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        req = Request(scope, receive, 0.0, {})
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def answer() -> None:
            self.waiting.set()
            try:
                await never
            except asyncio.CancelledError:
                self.events.append("answer cancelled")
                raise

        try:
            await req.until_disconnect(answer())
        except ClientGone:
            self.events.append("ClientGone" if DISCONNECT_HOOK not in scope else "ClientGone, hook left")
        self.ended.set()


async def _serve(app: _Waits) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    # (the socket below is the server's: no host or port here)
    config = uvicorn.Config(
        app, http=EdgeHttpProtocol, lifespan="off", timeout_graceful_shutdown=1, log_level="warning"
    )
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # a connection made before the server runs waits in the backlog
    task = asyncio.create_task(server.serve(sockets=[sock]))
    return server, task, sock.getsockname()[1]


async def test_a_client_that_hangs_up_cancels_the_wait_for_its_answer() -> None:
    app = _Waits()
    server, task, port = await _serve(app)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        await asyncio.wait_for(app.waiting.wait(), 5)
        writer.close()
        await asyncio.wait_for(app.ended.wait(), 5)
        assert app.events == ["answer cancelled", "ClientGone"]
    finally:
        server.should_exit = True
        await task


async def test_a_wait_cancelled_by_someone_else_stays_cancelled() -> None:
    """E.g. the server's shutdown cancelling the request's task: that is not turned into
    ``ClientGone``, even when the client also hung up."""
    scope: dict[str, object] = {"headers": []}
    req = Request(scope, None, 0.0, {})  # type: ignore[arg-type]
    started = asyncio.Event()

    async def answer() -> None:
        started.set()
        await asyncio.get_running_loop().create_future()

    async def handler() -> None:
        await req.until_disconnect(answer())

    task = asyncio.create_task(handler())
    await started.wait()
    scope[DISCONNECT_HOOK]()  # type: ignore[operator]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert DISCONNECT_HOOK not in scope

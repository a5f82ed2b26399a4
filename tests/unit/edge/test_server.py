"""The edge's HTTP protocol joins the writes of one loop turn (a response's head and body)."""

from __future__ import annotations

import asyncio

from services.edge.server import _Coalescing


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

"""The sinks' batcher in memory: a recording writer, and batch windows ended by hand."""

from __future__ import annotations

import asyncio

import pytest

from services.runtime.batching import Batcher


class Timers:
    """``call_later`` whose callbacks run when the test says the window is over."""

    def __init__(self) -> None:
        self.pending: list[Handle] = []

    def __call__(self, delay: float, callback) -> Handle:
        self.pending.append(h := Handle(callback))
        return h

    def fire(self) -> None:
        due, self.pending = self.pending, []
        for h in due:
            if not h.cancelled:
                h.callback()


class Handle:
    def __init__(self, callback) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Writer:
    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.fail_first = fail_first
        self.gate: asyncio.Event | None = None
        self.in_flight: dict[str, int] = {}
        self.max_in_flight = 0

    async def __call__(self, lane: str, items: list[int]) -> None:
        self.in_flight[lane] = self.in_flight.get(lane, 0) + 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight[lane])
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail_first > 0:
                self.fail_first -= 1
                raise OSError("store unreachable")
            self.calls.append((lane, list(items)))
        finally:
            self.in_flight[lane] -= 1


async def test_a_full_batch_is_written_at_once_and_add_returns_after_the_write():
    w, timers = Writer(), Timers()
    b = Batcher(w, max_items=3, max_wait_s=60, call_later=timers)
    adds = [asyncio.create_task(b.add("p0", i)) for i in range(3)]
    await asyncio.wait_for(asyncio.gather(*adds), 5)
    assert w.calls == [("p0", [0, 1, 2])]


async def test_a_partial_batch_waits_for_its_window():
    w, timers = Writer(), Timers()
    b = Batcher(w, max_items=100, max_wait_s=60, call_later=timers)
    add = asyncio.create_task(b.add("p0", 7))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not add.done() and w.calls == []
    timers.fire()
    await asyncio.wait_for(add, 5)
    assert w.calls == [("p0", [7])]


async def test_bytes_close_a_batch_too():
    w, timers = Writer(), Timers()
    b = Batcher(w, max_items=100, max_wait_s=60, max_bytes=10, call_later=timers)
    await asyncio.wait_for(asyncio.gather(b.add("p0", 1, size=6), b.add("p0", 2, size=6)), 5)
    assert w.calls == [("p0", [1, 2])]


async def test_one_write_per_lane_at_a_time_in_order_and_batches_queued_meanwhile_go_out_together():
    w, timers = Writer(), Timers()
    w.gate = asyncio.Event()
    b = Batcher(w, max_items=2, max_wait_s=60, call_later=timers)
    first = [asyncio.create_task(b.add("p0", i)) for i in (0, 1)]  # full: its write starts, held by the gate
    await asyncio.sleep(0)
    later = [asyncio.create_task(b.add("p0", i)) for i in (2, 3)]  # closes while the lane writes
    other = [asyncio.create_task(b.add("p1", i)) for i in (10, 11)]  # another lane: not held behind p0
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not any(t.done() for t in first + later + other)
    w.gate.set()
    await asyncio.wait_for(asyncio.gather(*first, *later, *other), 5)
    assert [c for c in w.calls if c[0] == "p0"] == [("p0", [0, 1]), ("p0", [2, 3])]
    assert ("p1", [10, 11]) in w.calls
    assert w.max_in_flight == 1


async def test_queued_batches_are_merged_up_to_max_items():
    w, timers = Writer(), Timers()
    w.gate = asyncio.Event()
    b = Batcher(w, max_items=4, max_wait_s=60, call_later=timers)
    tasks = [asyncio.create_task(b.add("p0", 0))]
    await asyncio.sleep(0)
    timers.fire()  # [0] closes and starts writing (held)
    await asyncio.sleep(0)
    for batch in ([1], [2, 3], [4, 5]):
        tasks += [asyncio.create_task(b.add("p0", i)) for i in batch]
        await asyncio.sleep(0)
        timers.fire()
        await asyncio.sleep(0)
    w.gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert w.calls == [("p0", [0]), ("p0", [1, 2, 3]), ("p0", [4, 5])]


async def test_a_failed_write_is_retried_not_dropped():
    w, timers = Writer(fail_first=2), Timers()
    b = Batcher(w, max_items=1, max_wait_s=60, retry_s=(0.001, 0.002), call_later=timers)
    await asyncio.wait_for(b.add("p0", 5), 5)
    assert w.calls == [("p0", [5])] and w.fail_first == 0


async def test_closing_writes_open_batches_then_cancels_what_could_not_be_written():
    w, timers = Writer(), Timers()
    b = Batcher(w, max_items=100, max_wait_s=60, call_later=timers)
    written = asyncio.create_task(b.add("p0", 1))
    await asyncio.sleep(0)
    await b.aclose(grace_s=5)
    await asyncio.wait_for(written, 5)
    assert w.calls == [("p0", [1])]

    stuck, timers2 = Writer(fail_first=10**9), Timers()
    b2 = Batcher(stuck, max_items=100, max_wait_s=60, retry_s=(0.001, 0.001), call_later=timers2)
    pending = asyncio.create_task(b2.add("p0", 1))
    await asyncio.sleep(0)
    await b2.aclose(grace_s=0.05)
    with pytest.raises(asyncio.CancelledError):
        await pending
    with pytest.raises(asyncio.CancelledError):
        await b2.add("p0", 2)

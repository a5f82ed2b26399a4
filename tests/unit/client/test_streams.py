"""The SDK's stream check: duplicates dropped, gaps refused, a restarted run replayed against
what the caller already holds (each answer assembled once, or an explicit error)."""

from __future__ import annotations

import pytest

from services.client.streams import StreamCheck
from services.contracts.errors import StreamInterrupted
from services.contracts.events import ChunkEmitted, Delta, ToolCallDelta, Usage


def chunk(run: str | None, seq: int, text: str | None = None, *, final: bool = False, **kw) -> ChunkEmitted:
    return ChunkEmitted(
        request_id="r",
        tenant_id="t",
        run_id=run,
        seq=seq,
        delta=Delta(role="assistant" if seq == 0 else None, content=text, tool_calls=kw.pop("tools", None)),
        final=final,
        finish_reason="stop" if final else None,
        usage=Usage(completion_tokens=3) if final else None,
        **kw,
    )


def deliver(check: StreamCheck, chunks: list[ChunkEmitted]) -> list[ChunkEmitted]:
    return [c for c in (check.accept(x) for x in chunks) if c is not None]


def text(chunks: list[ChunkEmitted]) -> str:
    return "".join(c.delta.content or "" for c in chunks)


def test_an_undisturbed_stream_passes_unchanged():
    chunks = [chunk("a", 0, "one "), chunk("a", 1, "two"), chunk("a", 2, final=True)]
    out = deliver(StreamCheck("r"), chunks)
    assert out == chunks and all(o is c for o, c in zip(out, chunks, strict=True))


def test_duplicates_are_dropped():
    check = StreamCheck("r")
    out = deliver(
        check, [chunk("a", 0, "one "), chunk("a", 0, "one "), chunk("a", 1, "two"), chunk("a", 1, "two")]
    )
    assert text(out) == "one two" and [c.seq for c in out] == [0, 1]


@pytest.mark.parametrize("expected", [0, 1])
def test_a_gap_is_an_explicit_error(expected: int):
    check = StreamCheck("r")
    if expected == 1:
        check.accept(chunk("a", 0, "one "))
    with pytest.raises(StreamInterrupted, match=f"expected seq {expected}, got 2") as exc:
        check.accept(chunk("a", 2, "three"))
    assert exc.value.code == "stream_interrupted" and exc.value.details["reason"] == "gap"


def test_a_restart_delivers_only_what_the_caller_does_not_hold():
    check = StreamCheck("r")
    before = deliver(check, [chunk("a", 0, "The quick "), chunk("a", 1, "brown")])
    after = deliver(
        check,
        [
            chunk("b", 0, "The ", provider="p", model="m"),  # the new run, from the start
            chunk("a", 2, " fox"),  # the old run, late: dropped
            chunk("b", 1, "quick bro"),
            chunk("b", 2, "wn fox "),
            chunk("b", 3, "jumps"),
            chunk("b", 4, final=True),
        ],
    )
    assert text(before) + text(after) == "The quick brown fox jumps"
    assert [c.seq for c in before + after] == list(range(len(before) + len(after)))  # gap-free for the caller
    assert after[0].delta.role is None and after[0].provider is None  # the first chunk was delivered already
    assert after[-1].final and after[-1].usage.completion_tokens == 3 and check.restarts == 1


def test_a_restart_before_anything_new_arrives_then_continues():
    check = StreamCheck("r")
    deliver(check, [chunk("a", 0, "abc")])
    assert check.accept(chunk("b", 0, "ab")) is None  # all held already
    out = check.accept(chunk("b", 1, "cdef"))
    assert out is not None and out.delta.content == "def" and out.seq == 1
    nxt = check.accept(chunk("b", 2, "g"))
    assert nxt is not None and nxt.delta.content == "g" and nxt.seq == 2


@pytest.mark.parametrize(
    "replay",
    [
        [chunk("b", 0, "The slow ")],  # another wording
        [chunk("b", 0, "The "), chunk("b", 1, final=True)],  # ends before what was delivered
    ],
)
def test_a_restart_that_differs_from_what_was_delivered_is_an_explicit_error(replay):
    check = StreamCheck("r")
    deliver(check, [chunk("a", 0, "The quick "), chunk("a", 1, "brown")])
    with pytest.raises(StreamInterrupted, match="restarted after an executor failure") as exc:
        deliver(check, replay)
    assert exc.value.details["reason"] == "restart"


def test_a_restart_whose_first_chunk_is_missing_is_a_gap():
    check = StreamCheck("r")
    deliver(check, [chunk("a", 0, "x")])
    with pytest.raises(StreamInterrupted, match="expected seq 0, got 1"):
        check.accept(chunk("b", 1, "y"))


def test_tool_call_deltas_are_replayed_too():
    def call(index: int, args: str, **kw) -> list[ToolCallDelta]:
        return [ToolCallDelta(index=index, arguments=args, **kw)]

    check = StreamCheck("r")
    deliver(
        check, [chunk("a", 0, tools=call(0, '{"ci', id="c1", name="f")), chunk("a", 1, tools=call(0, 'ty":'))]
    )
    out = deliver(
        check,
        [
            chunk("b", 0, tools=call(0, '{"city', id="c1", name="f")),
            chunk("b", 1, tools=call(0, '":"Paris"}')),
            chunk("b", 2, final=True),
        ],
    )
    assert [tc.arguments for c in out for tc in c.delta.tool_calls or ()] == ['"Paris"}']
    other = StreamCheck("r")
    deliver(other, [chunk("a", 0, tools=call(0, "{", id="c1", name="f"))])
    with pytest.raises(StreamInterrupted):  # the provider named the call anew: the caller holds the old id
        other.accept(chunk("b", 0, tools=call(0, "{", id="c2", name="f")))


def test_a_restarted_run_that_fails_ends_with_its_own_error():
    check = StreamCheck("r")
    deliver(check, [chunk("a", 0, "abc")])
    failed = chunk("b", 0, final=True, error={"code": "provider_error", "message": "upstream down"})
    out = check.accept(failed)
    assert out is not None and out.final and out.error.code == "provider_error"


def test_chunks_without_a_run_id_restart_at_seq_zero():
    """Chunks from an executor that names no run: seq 0 again is a restart."""
    check = StreamCheck("r")
    deliver(check, [chunk(None, 0, "ab"), chunk(None, 1, "c")])
    out = deliver(check, [chunk(None, 0, "abcd"), chunk(None, 1, final=True)])
    assert text(out) == "d" and out[-1].final

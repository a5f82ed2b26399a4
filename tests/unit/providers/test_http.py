"""Shared plumbing: error-body reading, SSE line splitting, stream pumping."""

from __future__ import annotations

import pytest

from services.contracts.errors import ProviderError
from services.executor.providers._http import MAX_ERROR_CHARS, error_message, sse_field, stream_deltas
from services.executor.providers.base import StreamDelta

from .support import LONG_LINE, answer, collect, streamed
from .upstreams import Upstream


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"error": {"message": "Invalid API key", "type": "invalid_request_error"}}', "Invalid API key"),
        (b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}', "Overloaded"),
        (b'{"error": "model not found"}', "model not found"),
        (b'{"message": "Forbidden"}', "Forbidden"),
        (b"<html><body>502 Bad Gateway</body></html>\n", "<html><body>502 Bad Gateway</body></html>"),
        (b"", "(empty body)"),
        (b'{"error": {"code": 7}}', '{"error": {"code": 7}}'),
    ],
)
def test_error_message_shapes(raw: bytes, expected: str) -> None:
    assert error_message(raw) == expected


def test_error_message_is_truncated() -> None:
    assert error_message(b"x" * 5000) == "x" * MAX_ERROR_CHARS
    assert len(error_message(b'{"error": "' + b"y" * 5000 + b'"}')) == MAX_ERROR_CHARS


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("data: {}", ("data", "{}")),
        ("data:{}", ("data", "{}")),
        ("data:  two spaces", ("data", " two spaces")),
        ("event: ping", ("event", "ping")),
        ("retry: 10", ("retry", "10")),
        ("data", ("data", "")),
        ("", None),
        (": keep-alive", None),
    ],
)
def test_sse_field(line: str, expected) -> None:
    assert sse_field(line) == expected


class Lines:
    def __init__(self) -> None:
        self.fed: list[str] = []
        self.closed = False

    def feed(self, line: str) -> list[StreamDelta]:
        self.fed.append(line)
        return [StreamDelta(content=line)] if line else []

    def close(self) -> list[StreamDelta]:
        self.closed = True
        return [StreamDelta(finish_reason="stop")]


URL = "http://x.test/s"


async def test_stream_deltas_feeds_every_line_then_closes(upstream: Upstream) -> None:
    http, rec = upstream.serve(answer(200, b"a\n\nb\r\nc", "text/plain"))
    parser = Lines()
    deltas = await collect(stream_deltas(http, "p", upstream.base_url(URL), {}, {"k": 1}, parser))
    assert [d.content for d in deltas] == ["a", "b", "c", None]
    assert parser.fed == ["a", "", "b", "c"] and parser.closed
    assert rec.body == {"k": 1}


async def test_stream_deltas_lines_survive_any_cut(upstream: Upstream) -> None:
    body = "α\r\n\r\nβγ\ndata: {}\r\nend".encode()
    http, _ = upstream.serve(streamed(body, "text/plain", piece=1))  # cuts CRLFs and characters in two
    parser = Lines()
    await collect(stream_deltas(http, "p", upstream.base_url(URL), {}, {}, parser))
    assert parser.fed == ["α", "", "βγ", "data: {}", "end"]


async def test_stream_deltas_lines_longer_than_the_read_buffer(upstream: Upstream) -> None:
    long = "data: " + "d" * LONG_LINE
    http, _ = upstream.serve(streamed(f"a\n{long}\r\n\nz\n".encode(), "text/event-stream", piece=8192))
    parser = Lines()
    await collect(stream_deltas(http, "p", upstream.base_url(URL), {}, {}, parser))
    assert parser.fed == ["a", long, "", "z"]


async def test_stream_deltas_error_status_reads_body_and_feeds_nothing(upstream: Upstream) -> None:
    http, _ = upstream.serve(answer(503, b'{"error": {"message": "busy"}}'))
    parser = Lines()
    with pytest.raises(ProviderError, match="p returned HTTP 503: busy"):
        await collect(stream_deltas(http, "p", upstream.base_url(URL), {}, {}, parser))
    assert parser.fed == [] and not parser.closed

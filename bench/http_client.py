"""CPU per provider call of the executor's HTTP client, ``AiohttpTransport``, as configured
by default and with ``trust_env`` (``LLMGW_PROVIDER_TRUST_ENV=1``), one after the other on one
server.

    python -m bench.http_client [--calls 4000] [--url http://127.0.0.1:18080/v1/chat/completions]

Each variant POSTs a small chat request ``--calls`` times in sequence (after 200 warm-up
calls) and the script prints the client process's CPU time per call (``getrusage``: user +
system, so the socket calls count) and the wall time per call. Without ``--url`` it starts
its own server in a child process: keep-alive HTTP/1.1 answering every POST with a fixed
OpenAI chat completion, so the server's CPU is not the client's.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import socket
import time
from collections.abc import Callable

import orjson
import uvloop

from services.executor.providers.transport import AiohttpTransport, HttpTransport

TRANSPORTS: dict[str, Callable[[], HttpTransport]] = {
    "aiohttp": AiohttpTransport,
    "aiohttp-trust-env": lambda: AiohttpTransport(trust_env=True),
}
BODY = orjson.dumps(
    {"model": "mock-gpt", "messages": [{"role": "user", "content": "Say hello in one short line."}]}
)
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "mock-gpt",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
    }
)


def _serve(sock: socket.socket) -> None:
    """The child's server: read each request's head and body, answer ``ANSWER``."""
    reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        len(ANSWER),
        ANSWER,
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                writer.write(reply)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, sock=sock)
        await server.serve_forever()

    uvloop.run(main())


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(name: str, url: str, calls: int) -> tuple[float, float]:
    http: HttpTransport = TRANSPORTS[name]()
    try:
        for _ in range(200):
            status, _ = await http.post_json(url, HEADERS, BODY, None)
            assert status == 200, status
        cpu, wall = _cpu(), time.perf_counter()
        for _ in range(calls):
            await http.post_json(url, HEADERS, BODY, None)
        return (_cpu() - cpu) / calls * 1e6, (time.perf_counter() - wall) / calls * 1e6
    finally:
        await http.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--url", help="a server to POST to (default: a local one in a child process)")
    parser.add_argument("--transports", default=",".join(TRANSPORTS))
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/chat/completions"
        server = multiprocessing.get_context("fork").Process(target=_serve, args=(sock,), daemon=True)
        server.start()
    try:
        for name in args.transports.split(","):
            cpu_us, wall_us = uvloop.run(measure(name, url, args.calls))
            print(f"{name:18s} {cpu_us:7.1f} us CPU per call  {wall_us:7.1f} us wall per call")
    finally:
        if server is not None:
            server.terminate()
            server.join()


if __name__ == "__main__":
    main()

"""The metrics port: ``GET /metrics`` on ``LLMGW_METRICS_PORT``, served from the service's own
event loop (so the scrape-time readers of ``metrics`` see a consistent state without locks).

A deliberately small HTTP/1.1 responder (one request per connection, ``connection: close``):
a scrape every few seconds needs nothing more, and no web framework is loaded into services
that have none.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from . import metrics
from .metrics import BUILD_INFO, METRICS_VERSION, VERSION, exposition
from .settings import Settings, flag, positive_int

log = logging.getLogger(__name__)

_listening: socket.socket | None = None


def serve(service: str, settings: Settings) -> None:
    """Set the build info; unless ``LLMGW_METRICS=0``, serve ``GET /metrics`` on
    ``LLMGW_METRICS_PORT`` (when set) from the running event loop, once per process. A port
    already taken (another worker of a multi-worker edge holds it) is logged and left: metrics
    are never why a service fails to start."""
    global _listening
    metrics.enabled = flag(settings.env, "LLMGW_METRICS", True)
    BUILD_INFO.labels(METRICS_VERSION, VERSION, service).set(1)
    port = positive_int(settings.env, "LLMGW_METRICS_PORT", 0) if metrics.enabled else 0
    if not port or _listening is not None:
        return
    host = settings.env.get("LLMGW_METRICS_HOST") or "127.0.0.1"
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        log.warning("metrics not served on %s:%d (%s)", host, port, exc)
        return
    sock.listen(16)
    sock.setblocking(False)
    _listening = sock
    task = asyncio.get_running_loop().create_task(asyncio.start_server(_answer, sock=sock))
    _tasks.add(task)
    task.add_done_callback(_started)
    log.info("metrics on http://%s:%d/metrics", host, port)


_tasks: set[asyncio.Task[asyncio.Server]] = set()


def _started(task: asyncio.Task[asyncio.Server]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("metrics server failed to start: %s", exc)


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One scrape: ``GET /metrics`` (or ``/``), answered and closed."""
    try:
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
        method, _, rest = head.partition(b" ")
        path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            status, body, ctype = b"405 Method Not Allowed", b"GET only\n", "text/plain"
        elif path not in (b"/metrics", b"/"):
            status, body, ctype = b"404 Not Found", b"see /metrics\n", "text/plain"
        else:
            status = b"200 OK"
            body, ctype = exposition()
        head_out = b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % (
            status,
            ctype.encode(),
            len(body),
        )
        writer.write(head_out if method == b"HEAD" else head_out + body)
        await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()

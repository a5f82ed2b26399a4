"""``python -m services.edge``: serve the edge with uvicorn (uvloop + httptools, with the
response writes of ``services.edge.server``).

``LLMGW_EDGE_WORKERS`` processes share the port; each runs ``app_factory`` and so owns
its own pipeline client and reply partition. On SIGTERM uvicorn stops accepting, lets
requests and streams in flight finish for ``LLMGW_EDGE_SHUTDOWN_GRACE_S``, then cancels
the rest (each such stream ends with an error event and a cancel).
"""

from __future__ import annotations

import uvicorn

from services.runtime.logs import configure

from .settings import EdgeSettings


def main() -> None:
    settings = EdgeSettings.from_env()
    rt = settings.runtime
    configure(rt.log_level, "edge")
    uvicorn.run(
        "services.edge.app:app_factory",
        factory=True,
        host=rt.edge_host,
        port=rt.edge_port,
        workers=rt.edge_workers,
        loop="uvloop",
        http="services.edge.server:EdgeHttpProtocol",
        lifespan="on",
        log_config=None,
        log_level=rt.log_level.lower(),
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=30,
        # /v1/realtime relays audio frames: a deflate per frame costs more CPU than it saves bytes
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )


if __name__ == "__main__":
    main()

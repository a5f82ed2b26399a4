"""Process entry point shared by every service: logging, signals, readiness."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from . import fetching, telemetry
from .logs import configure
from .settings import Settings

log = logging.getLogger(__name__)


def mark_ready(service: str, settings: Settings) -> None:
    """Tell the launcher (``llmgw up``) this process is serving: it waits for
    ``settings.ready_file``.

    Start-up objects (modules, config, clients) move to the GC's permanent generation and
    young collections run less often, so collections stay short under load (tail latency).
    """
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    if settings.ready_file is not None:
        settings.ready_file.write_text(f"{os.getpid()}\n")
    log.info("%s %s ready", service, settings.instance_id)


def prepare_process(settings: Settings) -> None:
    """What a gateway service process does at start, before its first Kafka client: the
    fetching changes of ``services.runtime.fetching`` unless ``LLMGW_FAST_FETCH=0``. Only the
    gateway's own services call this (``run_service``, the edge's worker factory), never the
    SDK, so a process that merely imports ``services.client`` keeps aiokafka as it is."""
    if settings.fast_fetch:
        fetching.install()


def run_service(name: str, serve: Callable[[Settings], Coroutine[Any, Any, None]]) -> None:
    """Run ``serve`` until SIGTERM/SIGINT, then let it shut down gracefully."""
    settings = Settings.from_env()
    configure(settings.log_level, name)
    telemetry.setup(name, console=settings.otel_console)
    prepare_process(settings)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def main() -> None:
        task = asyncio.create_task(serve(settings))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())

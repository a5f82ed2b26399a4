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

from . import metrics_http, telemetry
from .logs import configure
from .settings import Settings

log = logging.getLogger(__name__)


def mark_ready(service: str, settings: Settings) -> None:
    """Tell the launcher (``llmgw up``) this process is serving: it waits for
    ``settings.ready_file``. From here its metrics are served (``metrics_http.serve``), and the edge,
    which ``run_service`` does not start, sets its tracing up.

    Start-up objects (modules, config, clients) move to the GC's permanent generation and
    young collections run less often, so collections stay short under load (tail latency).
    """
    if not telemetry.configured():
        telemetry.setup(
            service, console=settings.otel_console, env=settings.env, instance_id=settings.instance_id
        )
    metrics_http.serve(service, settings)
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    if settings.ready_file is not None:
        settings.ready_file.write_text(f"{os.getpid()}\n")
    log.info("%s %s ready", service, settings.instance_id)


#: The running service's stop, while ``run_service`` runs (one service per process).
_stop: Callable[[BaseException], None] | None = None


def fail(exc: BaseException) -> None:
    """A part of this service cannot go on (a consumer whose records cannot be dead-lettered):
    stop the service as SIGTERM does, then exit with status 1. Outside ``run_service`` (a test,
    a library user) nothing happens here: the caller has logged it and keeps the error."""
    if _stop is not None:
        _stop(exc)


def run_service(name: str, serve: Callable[[Settings], Coroutine[Any, Any, None]]) -> None:
    """Run ``serve`` until SIGTERM/SIGINT, then let it shut down gracefully: ``serve`` is
    cancelled once, and its shutdown (draining in-flight work, committing, leaving its groups)
    is not interrupted by further signals. A ``fail`` stops it the same way and the process
    exits with status 1; so does ``serve`` raising."""
    settings = Settings.from_env()
    configure(settings.log_level, name)
    telemetry.setup(name, console=settings.otel_console, env=settings.env, instance_id=settings.instance_id)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    failures: list[BaseException] = []

    async def main() -> None:
        global _stop
        task = asyncio.create_task(serve(settings))
        loop = asyncio.get_running_loop()
        stopping = False

        def stop(why: str) -> None:
            nonlocal stopping
            if stopping:
                log.warning("%s: %s while already stopping; the shutdown goes on", name, why)
                return
            stopping = True
            log.info("%s stopping (%s): draining in-flight work", name, why)
            task.cancel()

        def on_failure(exc: BaseException) -> None:
            failures.append(exc)
            loop.call_soon(stop, f"failed: {type(exc).__name__}")

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop, sig.name)
        _stop = on_failure
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            _stop = None
        log.info("%s stopped", name)

    asyncio.run(main())
    if failures:
        log.critical("%s exits with status 1: %s", name, failures[0])
        raise SystemExit(1)

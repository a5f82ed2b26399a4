"""A throw-away gateway stack for a benchmark: fresh state dir, unique topic prefix, free ports.

``python -m bench.stackutil --config PATH [--edge] ...`` is a *holder*: it starts the stack
(its processes become this process's children, so this process is the root of exactly the
gateway's process tree), prints one JSON line with the components, and stops the stack when
its stdin closes or it gets SIGTERM/SIGINT. ``bench.http_bench`` uses it so the peer-bench
harness can measure the whole gateway as one process tree (``--gateway-pid``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from services.runtime.settings import ROOT, Settings


def new_settings(
    config_path: Path | None = None,
    state_dir: Path | None = None,
    log_level: str = "WARNING",
    edge_workers: int = 1,
) -> Settings:
    """Settings for a new stack: the broker from ``KAFKA_BOOTSTRAP_SERVERS`` if set (external),
    else a broker of its own on a free port; every other port free; a unique topic prefix."""
    from services.cli import infra

    state = state_dir or Path(tempfile.mkdtemp(prefix="llmgw-bench-"))
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    kafka_port = int(external.split(",")[0].rsplit(":", 1)[1]) if external else infra.free_port()
    return Settings(
        bootstrap_servers=external or f"127.0.0.1:{kafka_port}",
        external_kafka=bool(external),
        kafka_port=kafka_port,
        config_path=config_path or ROOT / "config" / "demo.yaml",
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
        state_dir=state,
        emulator_port=infra.free_port(),
        s3_port=infra.free_port(),
        edge_port=infra.free_port(),
        edge_workers=edge_workers,
        log_level=log_level,
    )


def delete_topics(bootstrap: str, prefix: str) -> list[str]:
    """Delete the topics this benchmark created on a shared broker (names starting with its
    unique prefix), so repeated runs do not pile up partitions there."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    if not prefix:
        return []

    async def run() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
            if mine:
                await admin.delete_topics(mine)
            return mine
        finally:
            await admin.close()

    return asyncio.run(run())


def spawn_holder(
    python: str, cwd: Path, env: Mapping[str, str], args: Sequence[str] = ("--edge",)
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start a holder (``python -m bench.stackutil ARGS`` in ``cwd``, its own session) and read
    its one JSON line: the holder and the stack's components. A holder that fails to start its
    stack (it reports why and exits) is waited for and ``SystemExit`` raised with its reason and
    where its logs are."""
    holder = subprocess.Popen(
        [python, "-m", "bench.stackutil", *args],
        cwd=str(cwd),
        env=dict(env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    line = holder.stdout.readline() if holder.stdout else ""
    info: dict[str, Any] = json.loads(line) if line else {}
    if not line or "error" in info:
        holder.wait(timeout=60)
        if not line:
            raise SystemExit("the stack holder exited before reporting (see its output above)")
        logs = Path(info["state_dir"]) / "logs"
        raise SystemExit(f"stack start-up failed: {info['error']}\n(logs in {logs})")
    return holder, info


def _hold(argv: list[str] | None = None) -> int:
    from services.cli.stack import Stack

    ap = argparse.ArgumentParser(prog="python -m bench.stackutil")
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--routers", type=int, default=1)
    ap.add_argument("--executors", type=int, default=1)
    ap.add_argument("--edge", action="store_true")
    ap.add_argument("--edge-workers", type=int, default=1)
    args = ap.parse_args(argv)
    settings = new_settings(args.config, edge_workers=args.edge_workers)
    stack = Stack(settings)
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        comps = stack.up(routers=args.routers, executors=args.executors, edge=args.edge)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which shows the log tail
        print(
            json.dumps({"error": f"{type(exc).__name__}: {exc}", "state_dir": str(settings.state_dir)}),
            flush=True,
        )
        stack.down()
        return 1
    try:
        print(
            json.dumps(
                {
                    "state_dir": str(settings.state_dir),
                    "bootstrap": settings.bootstrap_servers,
                    "external_kafka": settings.external_kafka,
                    "topic_prefix": settings.topic_prefix,
                    "components": [
                        {"name": c.name, "pid": c.pid, "endpoint": c.endpoint, "log": c.log} for c in comps
                    ],
                }
            ),
            flush=True,
        )
        # stop when the parent closes our stdin (or dies) or signals us
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        stop.wait()
    finally:
        stack.down()
        if settings.external_kafka:
            try:
                delete_topics(settings.bootstrap_servers, settings.topic_prefix)
            except Exception as exc:  # noqa: BLE001 - best effort
                print(f"could not delete topics {settings.topic_prefix}*: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(_hold())

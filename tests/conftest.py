"""Shared fixtures. The real broker: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else a local
Apache Kafka (KRaft) started from the Maven-resolved jars for this test session."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.cli import infra
from services.runtime.settings import Settings


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if external := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield external
        return
    state = tmp_path_factory.mktemp("kafka")
    port, controller = infra.free_port(), infra.free_port()
    cmd, _ = infra.kafka_command(state, port, controller, Settings.from_env().cache_dir)
    log = open(state / "kafka.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        infra.wait_port("127.0.0.1", port, 120, proc, "kafka")
        bootstrap = f"127.0.0.1:{port}"
        asyncio.run(_wait_broker(bootstrap))
        yield bootstrap
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(state, ignore_errors=True)


async def _wait_broker(bootstrap: str, timeout: float = 60) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
        finally:
            await admin.close()


@pytest.fixture
def topic_prefix() -> str:
    """A fresh prefix: each test gets its own topics and consumer groups."""
    return f"t{uuid.uuid4().hex[:8]}."


ROOT = Path(__file__).resolve().parents[1]

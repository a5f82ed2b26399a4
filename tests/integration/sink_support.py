"""What the sink tests share: a real S3 endpoint (moto's server, as ``llmgw up`` runs it), a sink
run as its own process (to SIGKILL it), and the broker's view of a consumer group."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.cli import infra

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def s3_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = infra.free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen(
        infra.moto_command(port), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        infra.wait_port("127.0.0.1", port, 30, proc, "moto")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class SinkProcess:
    """``python -m services.<module>`` with the test's broker, topic prefix, S3 and bucket."""

    def __init__(self, module: str, env: dict[str, str], state: Path):
        self.module = module
        self.env = env
        self.state = state
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60) -> None:
        self.starts += 1
        ready = self.state / f"ready-{self.starts}"
        log = open(self.state / f"sink-{self.starts}.log", "wb")
        env = os.environ | self.env | {"LLMGW_READY_FILE": str(ready), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited with {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.module} not ready: {self.log_tail()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye to the group."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(30)

    def log_tail(self) -> str:
        return (self.state / f"sink-{self.starts}.log").read_text(errors="replace")[-3000:]


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``llmgw ARGS`` as a separate process with ``env`` (on top of this one's)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli.main", *args],
        env=os.environ | env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset of each partition (-1: none)."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        return {p: (await c.committed(TopicPartition(topic, p))) or -1 for p in range(partitions)}
    finally:
        await c.stop()


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await c.start()
    try:
        ends = await c.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await c.stop()


async def until(condition, within: float = 60.0, step: float = 0.02):  # type: ignore[no-untyped-def]
    """Await ``condition()`` (a coroutine function) until it returns something truthy; return it."""
    async with asyncio.timeout(within):
        while not (value := await condition()):  # noqa: ASYNC110
            await asyncio.sleep(step)
        return value

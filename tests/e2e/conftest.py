"""The whole stack for end-to-end tests: emulator, S3, two routers, two executors and the
edge as separate processes (``llmgw up``'s own launcher) on the session's real broker."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.cli import infra
from services.cli.stack import Stack
from services.client import GatewayClient
from services.runtime.settings import Settings


@pytest.fixture(scope="session")
def stack_settings(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return dataclasses.replace(
        Settings.from_env({}),
        bootstrap_servers=kafka_bootstrap,
        external_kafka=True,
        topic_prefix=f"e2e{uuid.uuid4().hex[:6]}.",
        state_dir=Path(tmp_path_factory.mktemp("stack")),
        emulator_port=infra.free_port(),
        s3_port=infra.free_port(),
        edge_port=infra.free_port(),
        log_level="WARNING",
    )


@pytest.fixture(scope="session")
def stack(stack_settings: Settings) -> Iterator[Stack]:
    # the media tests' own HTTP servers listen on 127.0.0.1: the safe fetcher may reach that host
    # (config/demo.yaml media.fetch.allow_hosts), and no other private address
    os.environ.setdefault("LLMGW_MEDIA_ALLOW_HOST", "127.0.0.1")
    s = Stack(stack_settings)
    s.up(routers=2, executors=2, edge=_edge_available())
    try:
        yield s
    finally:
        s.down()


def _edge_available() -> bool:
    return (Path(__file__).resolve().parents[2] / "services" / "edge" / "__main__.py").exists()


@pytest.fixture(scope="session")
def emulator_url(stack: Stack, stack_settings: Settings) -> str:
    return f"http://127.0.0.1:{stack_settings.emulator_port}"


@pytest.fixture(scope="session")
def edge_url(stack: Stack, stack_settings: Settings) -> str:
    return f"http://{stack_settings.edge_host}:{stack_settings.edge_port}"


@pytest.fixture(scope="session")
async def gw(stack: Stack, stack_settings: Settings) -> AsyncIterator[GatewayClient]:
    async with GatewayClient(
        stack_settings.bootstrap_servers,
        "demo",
        "e2e-user",
        topic_prefix=stack_settings.topic_prefix,
        timeout_s=30,
    ) as client:
        yield client


@pytest.fixture(scope="session")
async def restricted_gw(stack: Stack, stack_settings: Settings) -> AsyncIterator[GatewayClient]:
    async with GatewayClient(
        stack_settings.bootstrap_servers,
        "restricted",
        "r-user",
        topic_prefix=stack_settings.topic_prefix,
        timeout_s=30,
    ) as client:
        yield client

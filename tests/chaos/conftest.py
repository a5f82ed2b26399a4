"""The chaos suite's stack: its own broker (the suite restarts it, so never a shared one, not even
``KAFKA_BOOTSTRAP_SERVERS``'), S3, the emulator, two routers, two executors, both sinks and the
edge, as ``llmgw up`` starts them. The table of what happened is printed at the end of the run."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.cli import infra
from services.cli.stack import Stack
from services.client import GatewayClient
from services.runtime.settings import Settings
from services.runtime.topics import Topics

from .harness import Books, Broker, Report

REPORT = pytest.StashKey[Report]()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(Path(tmp_path_factory.mktemp("chaos-kafka")), Settings.from_env().cache_dir)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(broker: Broker) -> str:
    return broker.bootstrap


@pytest.fixture(scope="session")
def stack_settings(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return dataclasses.replace(
        Settings.from_env({}),
        bootstrap_servers=broker.bootstrap,
        external_kafka=True,
        topic_prefix=f"chaos{uuid.uuid4().hex[:6]}.",
        state_dir=Path(tmp_path_factory.mktemp("chaos-stack")),
        emulator_port=infra.free_port(),
        s3_port=infra.free_port(),
        edge_port=infra.free_port(),
        log_level="WARNING",
    )


@pytest.fixture(scope="session")
def stack(stack_settings: Settings) -> Iterator[Stack]:
    s = Stack(stack_settings)
    s.up(routers=2, executors=2, edge=True)
    try:
        yield s
    finally:
        s.down()


@dataclass
class Chaos:
    stack: Stack
    broker: Broker
    settings: Settings
    gw: GatewayClient
    limited: GatewayClient
    budgeted: GatewayClient
    http: httpx.AsyncClient
    books: Books
    report: Report

    @property
    def topics(self) -> Topics:
        return Topics.load(self.settings.topics_path, self.settings.topic_prefix)

    @property
    def prefix(self) -> str:
        return self.settings.topic_prefix

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap_servers

    @property
    def edge_url(self) -> str:
        return f"http://{self.settings.edge_host}:{self.settings.edge_port}"


@pytest.fixture(scope="session")
async def chaos(
    request: pytest.FixtureRequest, stack: Stack, broker: Broker, stack_settings: Settings
) -> AsyncIterator[Chaos]:
    s = stack_settings
    report = request.config.stash.setdefault(REPORT, Report())
    clients = [
        GatewayClient(s.bootstrap_servers, tenant, user, topic_prefix=s.topic_prefix, timeout_s=60)
        for tenant, user in (("demo", "chaos"), ("limited", "limited-user"), ("budgeted", "budgeted-user"))
    ]
    for c in clients:
        await c.start()
    http = httpx.AsyncClient(
        base_url=f"http://{s.edge_host}:{s.edge_port}",
        headers={"authorization": "Bearer sk-llmgw-demo"},
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
    )
    books = Books(s.bootstrap_servers, s.topic_prefix, f"http://127.0.0.1:{s.s3_port}", s.usage_bucket)
    await books.__aenter__()
    try:
        yield Chaos(stack, broker, s, clients[0], clients[1], clients[2], http, books, report)
    finally:
        await books.__aexit__(None, None, None)
        await http.aclose()
        for c in clients:
            await c.aclose()


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    report = config.stash.get(REPORT, None)
    if report is not None and report.rows:
        terminalreporter.write_sep("=", "chaos")
        terminalreporter.write_line(report.render())

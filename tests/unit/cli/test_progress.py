"""What the CLI tells a person: ``llmgw up`` names each step it waits for, and listings are
tables on a terminal and JSON with ``--json``."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.cli import infra, main, stack
from services.cli.output import LinePrinter, progress_for, table, usage_table
from services.contracts.events import UsageRecorded
from services.runtime import s3
from services.runtime.plugins import Position
from services.runtime.s3 import MemoryObjectStore
from services.runtime.settings import Settings
from services.usage_sink.ledger import S3UsagePlugin


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_line_per_step_with_the_time_since_the_start():
    out, now = io.StringIO(), [100.0]
    printer = LinePrinter(out, clock=lambda: now[0])
    printer("kafka: waiting for the broker to start")
    now[0] = 112.34
    printer("topics: applying topics.yaml")
    assert out.getvalue().splitlines() == [
        "llmgw: [   0.0s] kafka: waiting for the broker to start",
        "llmgw: [  12.3s] topics: applying topics.yaml",
    ]


def test_progress_on_a_terminal_or_when_asked_only():
    assert isinstance(progress_for(False, Tty()), LinePrinter)
    assert isinstance(progress_for(True, io.StringIO()), LinePrinter)
    assert progress_for(False, io.StringIO()) is None


@pytest.fixture
def fake_launch(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``Stack.up`` with nothing started: every start, wait and topic check is recorded instead."""
    log: list[str] = []

    def start(self: stack.Stack, c: stack.Component) -> None:
        c.pid = 4242
        log.append(f"start {c.name}")

    async def apply(bootstrap: str, topics: Any, create: bool = True) -> list[str]:
        log.append("apply topics")
        return []

    monkeypatch.setattr(stack.Stack, "_start", start)
    monkeypatch.setattr(stack.Stack, "_wait", lambda self, c, timeout: log.append(f"wait {c.name}"))
    monkeypatch.setattr(stack, "apply_topics", apply)
    return log


def test_up_names_what_it_waits_for_before_each_wait(fake_launch: list[str], tmp_path: Path):
    settings = dataclasses.replace(Settings.from_env({}), state_dir=tmp_path, external_kafka=True)
    steps: list[str] = []

    def progress(step: str) -> None:
        steps.append(step)
        fake_launch.append(step)

    stack.Stack(settings, progress=progress).up()
    said = [s.split(":")[0] for s in steps]
    assert said == [
        "s3",
        "emulator",
        "topics",
        "router-0",
        "executor-0",
        "media-store",
        "batches",
        "usage-sink",
        "audit-sink",
        "edge",
    ]
    assert "S3 (moto)" in steps[0] and "emulator" in steps[1] and "topics.yaml" in steps[2]
    assert all(s.endswith("waiting until it is ready") for s in steps[3:])
    for s in steps:  # each line comes before what it announces
        name = s.split(":")[0]
        follows = "apply topics" if name == "topics" else f"wait {name}"
        assert fake_launch.index(s) < fake_launch.index(follows), s


def test_up_is_silent_without_a_progress(
    fake_launch: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    settings = dataclasses.replace(Settings.from_env({}), state_dir=tmp_path, external_kafka=True)
    stack.Stack(settings).up()
    assert capsys.readouterr() == ("", "") and "wait edge" in fake_launch


def test_the_maven_download_and_the_storage_format_are_announced(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    ran: list[list[str]] = []

    def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        ran.append(cmd)
        if cmd[0] == "mvn":  # "resolve" into the directory Maven is given
            out = next(a.split("=", 1)[1] for a in cmd if a.startswith("-DoutputDirectory="))
            Path(out).mkdir(parents=True)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(infra.subprocess, "run", run)
    monkeypatch.setattr(infra.shutil, "which", lambda name: f"/usr/bin/{name}")
    steps: list[str] = []
    infra.kafka_command(tmp_path / "state", 9092, 9093, tmp_path / "cache", steps.append)
    assert [s.split(":")[0] for s in steps] == ["kafka", "kafka"]
    assert (
        "Maven" in steps[0] and "formatting" in steps[1] and [c[0] for c in ran] == ["mvn", "/usr/bin/java"]
    )
    (tmp_path / "state" / "kafka" / "data" / "meta.properties").write_text("formatted")
    again: list[str] = []
    infra.kafka_command(tmp_path / "state", 9092, 9093, tmp_path / "cache", again.append)
    assert again == [] and len(ran) == 2  # cached jars, formatted storage: nothing to wait for


# --- tables ---------------------------------------------------------------------------------


def test_a_table_fits_its_widest_cells_and_right_aligns_numbers():
    text = table(
        ["model", "requests", "cost_usd"],
        [["a-long-model-name", 3, 0.5], ["b", 1234, 0.25]],
        footer=["TOTAL", 1237, 0.75],
    )
    lines = text.splitlines()
    assert lines[0] == "model              requests  cost_usd"
    assert lines[1] == "a-long-model-name         3  0.500000"
    assert lines[2] == "b                     1,234  0.250000"
    assert set(lines[3]) == {"-", " "} and lines[4] == "TOTAL                 1,237  0.750000"
    assert len({len(line) for line in lines}) == 1


NOW = datetime.now(UTC)


@pytest.fixture
def ledger(monkeypatch: pytest.MonkeyPatch) -> MemoryObjectStore:
    """The usage bucket ``llmgw usage report`` opens, in memory, holding three records."""
    store = MemoryObjectStore()

    def u(i: int, alias: str, user: str, status: str = "ok") -> UsageRecorded:
        return UsageRecorded(
            request_id=f"r{i}",
            tenant_id="demo",
            user_id=user,
            status=status,
            alias=alias,
            prompt_tokens=1000 * i,
            completion_tokens=10,
            total_tokens=1000 * i + 10,
            cost_usd=0.001 * i,
            occurred_at=NOW - timedelta(minutes=i),
        )

    records = [
        u(1, "demo-openai", "ann"),
        u(2, "demo-anthropic-with-a-long-name", "bob"),
        u(3, "demo-openai", "ann", "error"),
    ]
    plugin = S3UsagePlugin(store, max_records=len(records))

    async def write() -> None:
        await asyncio.gather(*(plugin.record(r, Position("llm.usage", 0, i)) for i, r in enumerate(records)))

    asyncio.run(write())

    class Bucket:
        def __init__(self, bucket: str, **kw: Any):
            pass

        async def __aenter__(self) -> MemoryObjectStore:
            return store

        async def __aexit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr(s3, "S3ObjectStore", Bucket)
    return store


def test_usage_report_is_a_table_on_a_terminal(ledger: MemoryObjectStore, capsys: pytest.CaptureFixture[str]):
    assert main.main(["usage", "report", "--tenant", "demo", "--since", "1h", "--by", "model"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("usage of tenant demo, ") and lines[0].endswith(" UTC, by model")
    assert lines[1].split() == ["model", "requests", "errors", "prompt", "completion", "total", "cost_usd"]
    assert lines[2].split() == [
        "demo-anthropic-with-a-long-name",
        "1",
        "0",
        "2,000",
        "10",
        "2,010",
        "0.002000",
    ]
    assert lines[3].split() == ["demo-openai", "2", "1", "4,000", "20", "4,020", "0.004000"]
    assert lines[5].split() == ["TOTAL", "3", "1", "6,000", "30", "6,030", "0.006000"]
    assert len({len(line) for line in lines[1:]}) == 1  # every column aligned, no name cut


def test_usage_report_is_json_with_json(ledger: MemoryObjectStore, capsys: pytest.CaptureFixture[str]):
    assert main.main(["usage", "report", "--tenant", "demo", "--since", "1h", "--by", "user", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["total"]["requests"] == 3 and {g["key"]: g["requests"] for g in doc["groups"]} == {
        "ann": 2,
        "bob": 1,
    }


def test_usage_report_without_groups_is_one_row(ledger: MemoryObjectStore):
    doc = {
        "tenant": "demo",
        "since": NOW.isoformat(),
        "until": NOW.isoformat(),
        "by": None,
        "groups": [],
        "total": {
            "requests": 3,
            "errors": 1,
            "prompt_tokens": 6000,
            "completion_tokens": 30,
            "total_tokens": 6030,
            "cost_usd": 0.006,
        },
    }
    lines = usage_table(doc).splitlines()
    assert len(lines) == 3 and lines[2].split() == ["demo", "3", "1", "6,000", "30", "6,030", "0.006000"]

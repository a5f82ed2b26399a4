"""``llmgw up / down / status / restart``: the whole local stack as separate processes.

What was started is recorded in ``<state dir>/stack.json`` (name, pid, command,
endpoint, log), so ``status``, ``down`` and ``restart NAME`` work from any shell.
Every process runs in its own session: ``up --detach`` returns and they keep running.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import httpx

from services.runtime.settings import Settings
from services.runtime.topics import Topics, apply_topics

from . import infra
from .output import Progress

INFRA = ("kafka", "s3", "emulator")  # started and waited for before the services
#: What ``up`` says it waits for, per infrastructure component (services: "until it is ready").
WAITING_FOR = {
    "kafka": "the broker to start",
    "s3": "S3 (moto) to listen",
    "emulator": "the provider emulator",
}
#: How long ``stop`` and ``down`` wait after SIGTERM before SIGKILL: longer than a service's
#: drain (``services.runtime.kafka.DRAIN_S``, 25 s), so a stopped service finishes what it holds.
STOP_GRACE_S = 30.0


@dataclass
class Component:
    name: str
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    endpoint: str | None = None
    health: str | None = None  # "tcp:PORT", an http URL, or "ready" (the ready file)
    pid: int | None = None
    log: str | None = None
    metrics: str | None = None  # a service's Prometheus endpoint (LLMGW_METRICS_PORT)


class Stack:
    """``progress`` is told each step of ``up`` as it begins (``output.progress_for``); None: silent."""

    def __init__(self, settings: Settings, progress: Progress | None = None):
        self.settings = settings
        self.progress: Progress = progress or (lambda step: None)
        self.state = settings.state_dir
        self.file = self.state / "stack.json"

    # --- records ---------------------------------------------------------------------

    def load(self) -> list[Component]:
        if not self.file.exists():
            return []
        return [Component(**c) for c in json.loads(self.file.read_text())["components"]]

    def save(self, comps: list[Component]) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        self.file.write_text(json.dumps({"components": [asdict(c) for c in comps]}, indent=2))

    # --- plan ---------------------------------------------------------------------------

    def plan(self, routers: int, executors: int, edge: bool) -> list[Component]:
        s = self.settings
        py = sys.executable
        comps: list[Component] = []
        if not s.external_kafka:
            cmd, _ = infra.kafka_command(
                self.state, s.kafka_port, infra.free_port(), s.cache_dir, self.progress
            )
            comps.append(Component("kafka", cmd, endpoint=s.bootstrap_servers, health=f"tcp:{s.kafka_port}"))
        comps.append(
            Component(
                "s3",
                infra.moto_command(s.s3_port),
                endpoint=f"http://127.0.0.1:{s.s3_port}",
                health=f"tcp:{s.s3_port}",
            )
        )
        emu = f"http://127.0.0.1:{s.emulator_port}"
        comps.append(
            Component(
                "emulator",
                [py, "-m", "services.emulator", "--port", str(s.emulator_port)],
                endpoint=emu,
                health=f"{emu}/healthz",
            )
        )
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": s.bootstrap_servers,
            "LLMGW_CONFIG": str(s.config_path),
            "LLMGW_TOPICS": str(s.topics_path),
            "LLMGW_TOPIC_PREFIX": s.topic_prefix,
            "LLMGW_EMULATOR_URL": emu,
            "LLMGW_S3_ENDPOINT": f"http://127.0.0.1:{s.s3_port}",
            "LLMGW_USAGE_BUCKET": s.usage_bucket,
            "LLMGW_AUDIT_BUCKET": s.audit_bucket,
            "LLMGW_LOG_LEVEL": s.log_level,
        }
        for i in range(routers):
            comps.append(Component(f"router-{i}", [py, "-m", "services.router"], dict(env), health="ready"))
        for i in range(executors):
            # the emulator's Realtime API wants a bearer key, as OpenAI's does (any key passes)
            executor_env = {"EMULATOR_API_KEY": s.env.get("EMULATOR_API_KEY", "sk-emulator"), **env}
            comps.append(
                Component(f"executor-{i}", [py, "-m", "services.executor"], executor_env, health="ready")
            )
        comps.append(Component("media-store", [py, "-m", "services.media_store"], dict(env), health="ready"))
        comps.append(Component("batches", [py, "-m", "services.batches"], dict(env), health="ready"))
        for sink in ("usage-sink", "audit-sink"):
            comps.append(
                Component(sink, [py, "-m", f"services.{sink.replace('-', '_')}"], dict(env), health="ready")
            )
        if edge:
            url = f"http://{s.edge_host}:{s.edge_port}"
            edge_env = env | {
                "LLMGW_EDGE_HOST": s.edge_host,
                "LLMGW_EDGE_PORT": str(s.edge_port),
                "LLMGW_EDGE_WORKERS": str(s.edge_workers),
            }
            comps.append(
                Component("edge", [py, "-m", "services.edge"], edge_env, endpoint=url, health=f"{url}/readyz")
            )
        for c in comps:
            c.env.setdefault("LLMGW_INSTANCE_ID", c.name)
            if c.name not in INFRA:  # each service serves its metrics on a port of its own
                c.env["LLMGW_METRICS_PORT"] = str(port := infra.free_port())
                c.metrics = f"http://127.0.0.1:{port}/metrics"
        return comps

    # --- lifecycle ----------------------------------------------------------------------------

    def up(
        self, routers: int = 1, executors: int = 1, edge: bool = True, timeout: float = 120
    ) -> list[Component]:
        running = [c for c in self.load() if _alive(c.pid)]
        if running:
            raise RuntimeError(
                f"the stack in {self.state} is already running ({', '.join(c.name for c in running)}); "
                "run `llmgw down` first"
            )
        comps = self.plan(routers, executors, edge)
        started: list[Component] = []
        try:
            applied = False
            for c in comps:
                if not applied and c.name not in INFRA:  # services check their topics at start
                    self.progress(
                        f"topics: applying {self.settings.topics_path.name} (creating the missing ones)"
                    )
                    asyncio.run(apply_topics(self.settings.bootstrap_servers, self._topics()))
                    applied = True
                self._start(c)
                started.append(c)
                self.save(started)
                if c.name in INFRA:
                    self.progress(f"{c.name}: waiting for {WAITING_FOR[c.name]} ({c.endpoint})")
                    self._wait(c, timeout)
            for c in started:
                if c.name not in INFRA:
                    self.progress(f"{c.name}: waiting until it is ready")
                self._wait(c, timeout)
        except BaseException:
            self.down()
            raise
        return started

    def _topics(self) -> Topics:
        return Topics.load(self.settings.topics_path, self.settings.topic_prefix)

    def _start(self, c: Component) -> None:
        logs = self.state / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        c.log = str(logs / f"{c.name}.log")
        ready = self.state / "run" / f"{c.name}.ready"
        ready.parent.mkdir(parents=True, exist_ok=True)
        ready.unlink(missing_ok=True)
        # the processes inherit this one's environment (PATH, HOME, JAVA_HOME ...), handed on unread
        env = os.environ | c.env | {"LLMGW_READY_FILE": str(ready), "PYTHONUNBUFFERED": "1"}
        with open(c.log, "ab") as log:
            proc = subprocess.Popen(
                c.cmd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=str(Path(__file__).resolve().parents[2]),
            )
        c.pid = proc.pid
        c.env = {k: v for k, v in c.env.items()}

    def _wait(self, c: Component, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(c.pid):
                tail = Path(c.log).read_text(errors="replace")[-3000:] if c.log else ""
                raise RuntimeError(f"{c.name} exited during start-up; last log lines:\n{tail}")
            if self._healthy(c):
                return
            time.sleep(0.1)
        raise TimeoutError(f"{c.name} not ready after {timeout:.0f}s (log: {c.log})")

    def _healthy(self, c: Component) -> bool:
        if c.health is None:
            return _alive(c.pid)
        if c.health.startswith("tcp:"):
            return infra.port_open("127.0.0.1", int(c.health[4:]))
        if c.health == "ready":
            return (self.state / "run" / f"{c.name}.ready").exists()
        try:
            return httpx.get(c.health, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def status(self) -> list[dict[str, Any]]:
        out = []
        for c in self.load():
            alive = _alive(c.pid)
            out.append(
                {
                    "name": c.name,
                    "pid": c.pid,
                    "endpoint": c.endpoint,
                    "metrics": c.metrics,
                    "log": c.log,
                    "running": alive,
                    "healthy": alive and self._healthy(c),
                }
            )
        if self.settings.external_kafka:
            out.insert(
                0,
                {
                    "name": "kafka",
                    "pid": None,
                    "endpoint": self.settings.bootstrap_servers,
                    "running": True,
                    "healthy": None,
                    "external": True,
                },
            )
        return out

    def down(self, grace: float = STOP_GRACE_S) -> list[str]:
        """SIGTERM every process (services first, the broker last), SIGKILL after ``grace``."""
        comps = list(reversed(self.load()))
        stopped = []
        for c in comps:
            if _alive(c.pid):
                _signal(c.pid, signal.SIGTERM)
                stopped.append(c.name)
        deadline = time.monotonic() + grace
        for c in comps:
            while _alive(c.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(c.pid):
                _signal(c.pid, signal.SIGKILL)
        self.file.unlink(missing_ok=True)
        return stopped

    def restart(self, name: str, timeout: float = 60) -> Component:
        """Stop one component (if it runs) and start it again with the same command."""
        comps = self.load()
        c = _find(comps, name)
        self.stop(name)
        self._start(c)
        self.save(comps)
        self._wait(c, timeout)
        return c

    def stop(self, name: str, grace: float = STOP_GRACE_S, sig: int = signal.SIGTERM) -> None:
        """Stop one component; KeyError names the known ones when ``name`` is not one."""
        c = _find(self.load(), name)
        if not _alive(c.pid):
            return
        _signal(c.pid, sig)
        deadline = time.monotonic() + grace
        while _alive(c.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(c.pid):
            _signal(c.pid, signal.SIGKILL)


def _find(comps: list[Component], name: str) -> Component:
    c = next((c for c in comps if c.name == name), None)
    if c is None:
        raise KeyError(f"no component {name!r}; have: {', '.join(x.name for x in comps)}")
    return c


def _alive(pid: int | None) -> TypeGuard[int]:
    """Whether ``pid`` is a running process (so not ``None``)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie (exited, not yet reaped by us) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except OSError:
        try:
            os.kill(pid, sig)
        except OSError:
            pass

"""Two arms of the gateway measured side by side, in short paired windows: ``bench.ab
--interleave ROUNDS`` (the HTTP points of ``bench.http_bench``, with peer-bench's own load tools).

Why not only whole-bench alternations (``bench.ab``): this machine's vCPUs change speed by up to
2x within minutes (``procstat.calibrate``), so two whole http_bench runs minutes apart differ by
more than the few percent an A/B looks for. Here both arms' stacks run at once (one broker, one
mock upstream, each stack its own topic prefix and ports), and every round measures each point on
arm A and then on arm B (the order flips every round) in windows of a few seconds: a round's two
windows are seconds apart, so each round gives one paired ratio B/A, and the report's figure is
the median of those ratios. The idle stack's background work (its consumers' polls) runs in both
arms' windows alike.

A window: peer-bench's ``wrk`` script (non-streaming) or ``stream_client.py`` (streaming, its
warm-up handshake), the mock upstream's request count before and after, and the CPU seconds of
the arm's service processes (router, executor, edge, the sinks: ``ab.SERVICES``) over it;
CPU per request is one over the other. Each window starts once the previous one's requests have
all reached the mock and no more arrive (``drain``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import procstat, stackutil

#: (kind, concurrency) of the A/B's HTTP points: http_bench's ``--ns-conc 1,16 --st-conc 1``.
POINTS = (("nonstream", 1), ("nonstream", 16), ("stream", 1))
DEMO_KEY = "sk-llmgw-demo"
MODEL = "mock-gpt"


def log(*a: object) -> None:
    print(time.strftime("%H:%M:%S"), "paired:", *a, file=sys.stderr, flush=True)


def peer_bench(path: Path) -> ModuleType:
    """peer-bench's ``bench.py`` as a module (its load tools: ``run_wrk``, ``run_stream_client``)."""
    sys.path.insert(0, str(path))
    spec = importlib.util.spec_from_file_location("peer_bench_bench", path / "bench.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def mock_count(url: str) -> int:
    with urllib.request.urlopen(url + "/__mock/stats", timeout=5) as r:
        req = json.loads(r.read())["requests"]
    return int(req.get("chat", 0)) + int(req.get("chat_stream", 0))


def drain(url: str, quiet_s: float = 0.5, max_s: float = 15.0) -> None:
    """Until the mock's request count has not moved for ``quiet_s`` (a load tool stops at its
    deadline with requests still in the gateway: they finish before the next window opens)."""
    deadline = time.monotonic() + max_s
    last, since = mock_count(url), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        n = mock_count(url)
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return


@dataclass
class Stack:
    """One arm's running stack (a ``bench.stackutil`` holder)."""

    name: str
    holder: subprocess.Popen[str]
    edge: str
    services: dict[str, int]

    @classmethod
    def start(cls, name: str, python: str, cwd: Path, env: dict[str, str]) -> Stack:
        holder, info = stackutil.spawn_holder(python, cwd, env)
        from bench.ab import SERVICES

        comps = {c["name"]: c for c in info["components"]}
        services = {n: c["pid"] for n, c in comps.items() if SERVICES.match(n) and c["pid"]}
        log(f"{name}: stack up, edge {comps['edge']['endpoint']}, services {services}")
        return cls(name, holder, comps["edge"]["endpoint"], services)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            if self.holder.stdin:
                self.holder.stdin.close()
        try:
            self.holder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.holder.kill()


class _Window:
    """peer-bench's window protocol for ``run_stream_client`` (``begin`` / ``end``)."""

    def __init__(self, stack: Stack, mock: str, broker_pid: int | None):
        self.stack, self.mock, self.broker_pid = stack, mock, broker_pid

    def begin(self) -> None:
        self.n0 = mock_count(self.mock)
        roots: dict[str, int | None] = dict(self.stack.services)
        if self.broker_pid:
            roots["kafka"] = self.broker_pid
        self.cpu = procstat.CpuWindow(roots).start()

    def end(self) -> dict[str, Any]:
        cpu = self.cpu.stop()
        return {"window_requests": mock_count(self.mock) - self.n0, "window_cpu": cpu}


def window(
    pb: ModuleType,
    stack: Stack,
    mock: str,
    kind: str,
    conc: int,
    seconds: float,
    body: Path,
    broker_pid: int | None = None,
) -> dict[str, float]:
    """One measured window of ``kind`` at ``conc`` on ``stack``: CPU ms per request of its
    services (and the executor's alone; with the broker's when this run started it: the
    gateway's whole CPU, as http_bench's own figure has it), p50 latency (TTFT for streams),
    requests."""
    drain(mock)
    if kind == "stream":
        w = _Window(stack, mock, broker_pid)
        r = pb.run_stream_client(stack.edge + "/v1", MODEL, conc, 10**7, seconds, DEMO_KEY, 20, w)
        n, cpu, p50 = r["window_requests"], r["window_cpu"], r["ttft_ms"]["p50"]
    else:
        w = _Window(stack, mock, broker_pid)
        w.begin()
        r = pb.run_wrk(stack.edge + "/v1/chat/completions", conc, seconds, body, DEMO_KEY, 2_000_000)
        drain(mock)  # the requests wrk abandoned at its deadline are finished, and counted
        out = w.end()
        n, cpu, p50 = out["window_requests"], out["window_cpu"], r["lat_ms"]["p50"]
    per = cpu["cpu_s"]
    total = sum(v for k, v in per.items() if v is not None and k != "kafka")
    executor = sum(v for k, v in per.items() if k.startswith("executor") and v is not None)
    out = {
        "services CPU ms/req": 1000 * total / max(n, 1),
        "executor CPU ms/req": 1000 * executor / max(n, 1),
        "p50 ms": p50,
        "requests": n,
        "calib ms": procstat.calibrate(),
    }
    if per.get("kafka") is not None:
        out["with broker CPU ms/req"] = 1000 * (total + per["kafka"]) / max(n, 1)
    return out


def run(
    arms: list[Any],
    *,
    rounds: int,
    seconds: float,
    bootstrap: str,
    peer_bench_dir: Path,
    label: str,
    out: Path,
    meta: dict[str, Any],
    broker_pid: int | None = None,
) -> str:
    """Both arms' stacks up at once, ``rounds`` rounds of every point on each; the report (also
    written to ``out`` after every round)."""
    pb = peer_bench(peer_bench_dir)
    tmp = Path(tempfile.mkdtemp(prefix="paired-"))
    body = tmp / "body-nonstream.json"
    body.write_text(json.dumps(pb.chat_body(MODEL, stream=False)))
    from services.cli import infra

    mock_port = infra.free_port()
    mock_url = f"http://127.0.0.1:{mock_port}"
    mock = subprocess.Popen(
        ["node", str(peer_bench_dir / "mock" / "mock_upstream.js"), str(mock_port)],
        stdout=open(tmp / "mock.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    stacks: list[Stack] = []
    results: list[tuple[int, str, str, dict[str, float]]] = []  # round, point, arm, figures
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        infra.wait_port("127.0.0.1", mock_port, 20, None, "mock upstream")
        for arm in arms:
            env = os.environ | arm.env | {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "LLMGW_MOCK_URL": mock_url}
            stacks.append(Stack.start(arm.name, arm.python, arm.dir, env))
        for s in stacks:  # warm-up: the broker's JIT, each service's first requests
            pb.run_wrk(s.edge + "/v1/chat/completions", 4, 10, body, DEMO_KEY, 2_000_000)
        for i in range(rounds):
            order = stacks if i % 2 == 0 else stacks[::-1]
            for kind, conc in POINTS:
                point = f"http {kind} c={conc}"
                for s in order:
                    figs = window(pb, s, mock_url, kind, conc, seconds, body, broker_pid)
                    results.append((i, point, s.name, figs))
                    log(
                        f"round {i + 1} {point} {s.name}: "
                        + json.dumps({k: round(v, 3) for k, v in figs.items()})
                    )
            text = render(
                label,
                [a.name for a in arms],
                results,
                meta | {"run": f"{started} to {time.strftime('%H:%M:%S')}"},
                seconds,
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
        return out.read_text() if out.exists() else ""
    finally:
        for s in stacks:
            s.stop()
        mock.terminate()


def render(
    label: str,
    names: list[str],
    results: list[tuple[int, str, str, dict[str, float]]],
    meta: dict[str, Any],
    seconds: float,
) -> str:
    a, b = names
    L = [f"# A/B (paired windows): {label}\n"]
    L += [f"- {k}: {v}" for k, v in meta.items()]
    L.append(
        f"- windows: {seconds:g} s each; both arms' stacks up at once; order {a}, {b} then {b}, {a}, ..."
    )
    L.append("")
    L.append(
        f"`{b}/{a}` is the median over the rounds of each round's ratio (the two windows of a round are "
        "seconds apart, so the machine's speed is the same for both); the arms' own medians and "
        "spreads (min-max) beside it.\n"
    )
    points = list(dict.fromkeys(p for _, p, _, _ in results))
    figures = ["services CPU ms/req", "executor CPU ms/req", "with broker CPU ms/req", "p50 ms"]
    L.append(f"| point | figure | {a} | {b} | {b}/{a} (median of rounds) | rounds |")
    L.append("|---|---|---:|---:|---:|---:|")
    for pt in points:
        by_round: dict[int, dict[str, dict[str, float]]] = {}
        for i, p, arm, figs in results:
            if p == pt:
                by_round.setdefault(i, {})[arm] = figs
        paired = [r for r in by_round.values() if a in r and b in r]
        for f in figures:
            if not paired or any(f not in r[a] or f not in r[b] for r in paired):
                continue
            va = [r[a][f] for r in paired]
            vb = [r[b][f] for r in paired]
            ratios = [y / x for x, y in zip(va, vb, strict=True) if x]
            ratio = statistics.median(ratios) if ratios else float("nan")
            spread = (
                f" ({100 * (min(ratios) - 1):+.1f}% to {100 * (max(ratios) - 1):+.1f}%)" if ratios else ""
            )
            L.append(
                f"| {pt} | {f} | {statistics.median(va):.2f} ({min(va):.2f}-{max(va):.2f}) | "
                f"{statistics.median(vb):.2f} ({min(vb):.2f}-{max(vb):.2f}) | "
                f"**{100 * (ratio - 1):+.1f}%**{spread} | {len(paired)} |"
            )
    L.append("\n## Every window\n")
    L.append(
        "| round | point | arm | services CPU ms/req | executor CPU ms/req | p50 ms | requests | calib ms |"
    )
    L.append("|---:|---|---|---:|---:|---:|---:|---:|")
    for i, p, arm, figs in results:
        L.append(
            f"| {i + 1} | {p} | {arm} | {figs['services CPU ms/req']:.2f} | {figs['executor CPU ms/req']:.2f} | "
            f"{figs['p50 ms']:.2f} | {figs['requests']:.0f} | {figs['calib ms']:.1f} |"
        )
    return "\n".join(L) + "\n"

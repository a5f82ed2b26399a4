"""Gateway vs direct, in one run: what the Kafka pipeline adds on top of the provider.

    python -m bench.kafka_bench            # full run (~4 min), starts its own stack
    python -m bench.kafka_bench --quick    # ~30 s smoke run
    python -m bench.kafka_bench --attach .llmgw   # measure a running stack (see bench/README.md)

The same chat requests go (a) straight to the provider emulator's OpenAI endpoint with
``httpx`` (one client per load worker; ``--direct-client``) and (b) through the gateway with ``GatewayClient``
(client -> llm.requests -> router -> llm.exec -> executor -> emulator -> llm.replies ->
client: three Kafka hops), closed-loop at a fixed concurrency, bounded by time and by a
request cap. Direct and gateway phases alternate (``--rounds``) so drift hits both.

Scenarios: non-streaming at concurrency 1 and 32, streaming time-to-first-token at 1
and 16, chunk coalescing (chunk events per stream and the smallest gap between
consecutive non-final chunk events), requests/s at saturation (concurrency 64). Around
every phase the CPU seconds of each stack process (router, executor, edge, the broker's
JVM, the emulator) and of this load generator are read from /proc.

Output: a markdown report on stdout and ``bench/results/kafka-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import resource
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from bench import procstat
from services.runtime.settings import ROOT

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
UPSTREAM = "gpt-emu"  # the emulator's OpenAI model
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant used in a latency benchmark."},
    {"role": "user", "content": "Say hello and explain in one sentence what an LLM gateway does."},
]
MAX_TOKENS = 256

# Gateway aliases the benchmark uses, each routed to the emulator with one scenario.
ALIASES = {"ns": "bench-ns", "stream": "bench-stream", "chunks": "bench-chunks"}
DEFAULT_SCENARIOS = {
    "ns": "tokens=20",  # no upstream delay: the gateway's own cost stands out
    "stream": "tokens=20,chunk_delay_ms=10",  # 20 content chunks, 10 ms apart (as peer-bench)
    "chunks": "tokens=50,chunk_delay_ms=2",  # 50 content chunks 2 ms apart: coalescing must kick in
}

TARGETS = {"added_p50_c1_ms": 6.0, "added_p99_c1_ms": 15.0, "cpu_ms_per_req": 4.0, "min_chunk_gap_ms": 20.0}


def log(*a: object) -> None:
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ statistics


def pct(values: list[float], q: float) -> float | None:
    """Percentile with linear interpolation between closest ranks."""
    if not values:
        return None
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {f"p{q:g}": pct(values, q) for q in (50, 90, 99)}
    out["mean"] = sum(values) / len(values) if values else None
    out["min"] = min(values) if values else None
    out["max"] = max(values) if values else None
    return {k: (round(v, 3) if v is not None else None) for k, v in out.items()}


# ------------------------------------------------------------------ config


def upstream_model(scenario: str) -> str:
    return f"{UPSTREAM}@{scenario}" if scenario else UPSTREAM


def bench_config(base: Path, scenarios: dict[str, str]) -> dict[str, Any]:
    """``base`` (the demo config) plus one alias per benchmark scenario, each routed to the
    emulator's OpenAI endpoint with the scenario in the upstream model name."""
    cfg = yaml.safe_load(base.read_text())
    provider = "emulator-openai"
    if provider not in cfg.get("providers", {}):
        raise SystemExit(f"{base}: needs provider {provider!r} (the emulator's OpenAI endpoint)")
    for key, alias in ALIASES.items():
        cfg.setdefault("models", {})[alias] = {
            "description": f"benchmark: emulator scenario {scenarios[key]!r}",
            "capabilities": ["chat", "stream"],
            "context_window": 128000,
            "max_output_tokens": 16384,
            "deployments": [
                {
                    "provider": provider,
                    "model": upstream_model(scenarios[key]),
                    "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.60},
                }
            ],
        }
    return cfg


def check_attached_config(path: Path, scenarios: dict[str, str]) -> None:
    """The attached stack must route the benchmark aliases to the scenarios we send direct."""
    from services.runtime.config import load_config
    from services.runtime.settings import Settings

    cfg = load_config(path, Settings.from_env().env)
    problems = []
    for key, alias in ALIASES.items():
        m = cfg.models.get(alias)
        want = upstream_model(scenarios[key])
        if m is None:
            problems.append(f"alias {alias} is missing")
        elif m.deployments[0].model != want:
            problems.append(
                f"alias {alias} routes to {m.deployments[0].model!r}, this run sends {want!r} direct"
            )
    if problems:
        raise SystemExit(
            f"the attached stack's config {path} does not fit this run: {'; '.join(problems)}.\n"
            "Start the stack with LLMGW_CONFIG=bench/config.yaml (default scenarios), or write a config for "
            "your scenarios with `python -m bench.kafka_bench --write-config PATH [--*-scenario ...]`."
        )


# ------------------------------------------------------------------ the stack


@dataclass
class Target:
    """What the benchmark talks to and which processes it watches."""

    bootstrap: str
    topic_prefix: str
    emulator_url: str
    procs: dict[str, int | None]  # component name -> root pid
    stack: Any = None  # the Stack we started (stopped at the end), None when attached
    state_dir: Path | None = None
    notes: list[str] = field(default_factory=list)


def _port(hostport: str) -> int:
    return int(hostport.rsplit(":", 1)[1])


def start_stack(args: argparse.Namespace, scenarios: dict[str, str]) -> Target:
    from services.cli.stack import Stack

    from .stackutil import new_settings

    settings = new_settings()
    state = settings.state_dir
    cfg_path = state / "bench-config.yaml"
    cfg_path.write_text(
        yaml.safe_dump(bench_config(ROOT / "config" / "demo.yaml", scenarios), sort_keys=False)
    )
    settings = dataclasses.replace(settings, config_path=cfg_path)
    stack = Stack(settings)
    broker = (
        f"broker {settings.bootstrap_servers}"
        if settings.external_kafka
        else f"own broker on :{settings.kafka_port}"
    )
    log(
        f"starting the stack in {state} (topic prefix {settings.topic_prefix}, {broker}, "
        f"routers={args.routers} executors={args.executors} edge={args.edge})"
    )
    t0 = time.monotonic()
    try:
        comps = stack.up(routers=args.routers, executors=args.executors, edge=args.edge)
    except BaseException:
        log(f"stack start-up failed; logs in {state}/logs")
        raise
    log(f"stack ready in {time.monotonic() - t0:.1f}s")
    procs: dict[str, int | None] = {c.name: c.pid for c in comps}
    tgt = Target(
        settings.bootstrap_servers,
        settings.topic_prefix,
        f"http://127.0.0.1:{settings.emulator_port}",
        procs,
        stack=stack,
        state_dir=state,
    )
    if settings.external_kafka:
        procs["kafka"] = procstat.pid_listening_on(settings.kafka_port)
        tgt.notes.append(
            f"external broker {settings.bootstrap_servers} (pid {procs['kafka']}): it may serve "
            "other clients too; its CPU here includes their load"
        )
    return tgt


def attach(args: argparse.Namespace, scenarios: dict[str, str]) -> Target:
    state = Path(args.attach)
    f = state / "stack.json"
    if not f.exists():
        raise SystemExit(f"no stack recorded in {f} (start one with `llmgw up --detach`)")
    comps = json.loads(f.read_text())["components"]
    alive = {c["name"]: c for c in comps if c.get("pid") and procstat.cpu_seconds(c["pid"]) is not None}
    svc = next((c for n, c in alive.items() if n.startswith("router")), None)
    if svc is None:
        raise SystemExit(f"the stack in {state} has no running router")
    env = svc.get("env") or {}
    bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:9092"
    emu = alive.get("emulator", {}).get("endpoint") or env.get("LLMGW_EMULATOR_URL")
    if not emu:
        raise SystemExit("cannot tell the attached stack's emulator URL")
    check_attached_config(Path(env.get("LLMGW_CONFIG") or ROOT / "config" / "demo.yaml"), scenarios)
    procs: dict[str, int | None] = {n: c["pid"] for n, c in alive.items()}
    if "kafka" not in procs:
        procs["kafka"] = procstat.pid_listening_on(_port(bootstrap.split(",")[0]))
    tgt = Target(bootstrap, env.get("LLMGW_TOPIC_PREFIX", ""), emu, procs, state_dir=state)
    tgt.notes.append(f"attached to the running stack in {state}")
    return tgt


def gateway_procs(procs: dict[str, int | None]) -> list[str]:
    """Processes whose CPU counts as the gateway's: every service and the broker."""
    return [n for n in procs if n == "kafka" or re.match(r"(router|executor|edge|media_store)", n)]


# ------------------------------------------------------------------ one request


Req = Callable[[int], Awaitable[dict[str, Any]]]  # called with the load worker's index


def direct_body(scenario: str, stream: bool) -> bytes:
    """The body the executor sends for the same request (see providers/openai.py to_wire)."""
    body: dict[str, Any] = {
        "model": upstream_model(scenario),
        "messages": MESSAGES,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


class Direct:
    """HTTP straight to the emulator. ``httpx`` (default): one ``httpx.AsyncClient`` per load worker;
    ``httpx-shared``: one client for all workers; ``aiohttp``: one shared ``aiohttp.ClientSession``.

    Why not one shared httpx client by default: httpcore's pool walks every pooled connection
    (``has_expired`` -> a readability poll) on each request, so its CPU per request grows with
    the number of connections: ~1 ms at concurrency 1, ~4 ms at 32, ~13 ms at 64 on a 2-core VM.
    The baseline would then measure the load generator, not the provider."""

    def __init__(self, mode: str, timeout: float):
        self.mode = mode
        self.timeout = timeout
        self._clients: dict[int, httpx.AsyncClient] = {}
        self._session: Any = None

    def _httpx(self, i: int) -> httpx.AsyncClient:
        key = 0 if self.mode == "httpx-shared" else i
        c = self._clients.get(key)
        if c is None:
            c = self._clients[key] = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout),
                limits=httpx.Limits(max_connections=512, max_keepalive_connections=512),
            )
        return c

    def _aiohttp(self) -> Any:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=512), timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        return self._session

    async def post(self, i: int, url: str, body: bytes) -> bytes:
        if self.mode == "aiohttp":
            async with self._aiohttp().post(url, data=body, headers=JSON) as r:
                r.raise_for_status()
                return await r.read()
        r = await self._httpx(i).post(url, content=body, headers=JSON)
        r.raise_for_status()
        return r.content

    async def lines(self, i: int, url: str, body: bytes) -> AsyncIterator[str]:
        if self.mode == "aiohttp":
            async with self._aiohttp().post(url, data=body, headers=JSON) as r:
                r.raise_for_status()
                async for raw in r.content:
                    yield raw.decode().rstrip("\r\n")
            return
        async with self._httpx(i).stream("POST", url, content=body, headers=JSON) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                yield line

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.aclose()
        if self._session is not None:
            await self._session.close()


JSON = {"content-type": "application/json"}


def make_direct(http: Direct, url: str, scenario: str, stream: bool) -> Req:
    body = direct_body(scenario, stream)

    async def nonstream(i: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        data = orjson.loads(await http.post(i, url, body))
        if not data["choices"][0]["message"]["content"]:
            raise ValueError("empty answer")
        return {"lat": (time.perf_counter() - t0) * 1000}

    async def streamed(i: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        ttft = None
        chunks = 0
        arrivals: list[float] = []
        async for line in http.lines(i, url, body):
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = orjson.loads(line[6:])
            ch = ev.get("choices")
            if ch and ch[0].get("delta", {}).get("content"):
                now = time.perf_counter()
                if ttft is None:
                    ttft = (now - t0) * 1000
                chunks += 1
                arrivals.append(now)
        if ttft is None:
            raise ValueError("stream without content")
        gaps = [(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:], strict=False)]
        return {
            "lat": (time.perf_counter() - t0) * 1000,
            "ttft": ttft,
            "chunks": chunks,
            "min_gap_arrival": min(gaps) if gaps else None,
        }

    return streamed if stream else nonstream


def make_gateway(gw: Any, alias: str, stream: bool, timeout_s: float) -> Req:
    async def nonstream(_: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        req = gw.build_request(alias, MESSAGES, stream=False, max_tokens=MAX_TOKENS, temperature=0)
        res = await gw.result(req, timeout_s)  # what GatewayClient.chat does
        lat = (time.perf_counter() - t0) * 1000
        t_back = time.time()
        if not (res.message and res.message.content):
            raise ValueError("empty answer")
        # where the time went, from the events' wall-clock stamps (one machine, one clock):
        # request created -> executor starts = client -> llm.requests -> router -> llm.exec -> executor;
        # result created -> handed to the caller = executor -> llm.replies -> client
        result_at = res.occurred_at.timestamp()
        exec_ms = res.latency.total_ms
        return {
            "lat": lat,
            "exec_total": exec_ms,
            "exec_provider": res.latency.provider_ms,
            "to_executor": (result_at - req.occurred_at.timestamp()) * 1000 - exec_ms if exec_ms else None,
            "to_client": (t_back - result_at) * 1000,
        }

    async def streamed(_: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        ttft = None
        events: list[tuple[float, float, bool]] = []  # (arrival, emitted, final)
        async for ch in gw.stream_chat(
            alias, MESSAGES, max_tokens=MAX_TOKENS, temperature=0, timeout_s=timeout_s
        ):
            now = time.perf_counter()
            if ttft is None and (ch.delta.content or ch.delta.tool_calls):
                ttft = (now - t0) * 1000
            events.append((now, ch.occurred_at.timestamp(), ch.final))
        if ttft is None:
            raise ValueError("stream without content")
        nonfinal = [e for e in events if not e[2]]
        emit_gaps = [(b[1] - a[1]) * 1000 for a, b in zip(nonfinal, nonfinal[1:], strict=False)]
        arr_gaps = [(b[0] - a[0]) * 1000 for a, b in zip(nonfinal, nonfinal[1:], strict=False)]
        return {
            "lat": (time.perf_counter() - t0) * 1000,
            "ttft": ttft,
            "chunks": len(events),
            "min_gap_emit": min(emit_gaps) if emit_gaps else None,
            "gaps": len(emit_gaps),
            "gaps_under_window": sum(g < TARGETS["min_chunk_gap_ms"] - 0.5 for g in emit_gaps),
            "min_gap_arrival": min(arr_gaps) if arr_gaps else None,
        }

    return streamed if stream else nonstream


# ------------------------------------------------------------------ one phase


async def closed_loop(fn: Req, conc: int, seconds: float, cap: int, hard_s: float) -> dict[str, Any]:
    """``conc`` workers, each sending its next request when the previous one is answered,
    until ``seconds`` have passed or ``cap`` requests were started. Requests in flight at the
    deadline are waited for (bounded by ``hard_s``), so every started request is counted."""
    samples: list[dict[str, Any]] = []
    errors: Counter[str] = Counter()
    started = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds

    async def worker(i: int) -> None:
        nonlocal started
        while time.perf_counter() < deadline and started < cap:
            started += 1
            try:
                samples.append(await fn(i))
            except Exception as exc:  # noqa: BLE001 - counted, reported
                code = getattr(exc, "code", None)
                errors[f"{type(exc).__name__}{':' + code if isinstance(code, str) else ''}"] += 1
                if len(errors) == 1 and sum(errors.values()) == 1:
                    log(f"  first error: {type(exc).__name__}: {str(exc)[:300]}")

    tasks = [asyncio.create_task(worker(i)) for i in range(conc)]
    done, pending = await asyncio.wait(tasks, timeout=seconds + hard_s)
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
        errors["hard_cut"] += len(pending)
    elapsed = time.perf_counter() - t0
    return {
        "samples": samples,
        "errors": dict(errors),
        "started": started,
        "elapsed_s": elapsed,
        "hit_cap": started >= cap,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge the rounds of one target in one scenario."""
    samples = [s for r in runs for s in r["samples"]]
    elapsed = sum(r["elapsed_s"] for r in runs)
    errors: Counter[str] = Counter()
    for r in runs:
        errors.update(r["errors"])
    out: dict[str, Any] = {
        "ok": len(samples),
        "errors": dict(errors),
        "n_errors": sum(errors.values()),
        "elapsed_s": round(elapsed, 3),
        "rps": round(len(samples) / elapsed, 1) if elapsed else None,
        "hit_cap": any(r["hit_cap"] for r in runs),
        "lat_ms": summary([s["lat"] for s in samples]),
    }
    if samples and "ttft" in samples[0]:
        out["ttft_ms"] = summary([s["ttft"] for s in samples])
        chunks = [s["chunks"] for s in samples]
        out["chunks_per_stream"] = {
            "mean": round(sum(chunks) / len(chunks), 2),
            "min": min(chunks),
            "max": max(chunks),
        }
        out["chunk_gaps"] = {
            "total": sum(s.get("gaps", 0) for s in samples),
            "under_window": sum(s.get("gaps_under_window", 0) for s in samples),
        }
        for k in ("min_gap_emit", "min_gap_arrival"):
            gaps = [s[k] for s in samples if s.get(k) is not None]
            if gaps:
                out[k + "_ms"] = {"min": round(min(gaps), 3), "p50_of_streams": round(pct(gaps, 50) or 0, 3)}
    if samples and "exec_total" in samples[0]:
        out["hops_ms"] = {
            "client_to_executor": summary(
                [s["to_executor"] for s in samples if s.get("to_executor") is not None]
            ),
            "executor": summary([s["exec_total"] for s in samples if s.get("exec_total") is not None]),
            "provider_call": summary(
                [s["exec_provider"] for s in samples if s.get("exec_provider") is not None]
            ),
            "executor_to_client": summary(
                [s["to_client"] for s in samples if s.get("to_client") is not None]
            ),
        }
    # CPU: sum over rounds, per request
    cpu: dict[str, float] = {}
    wall = 0.0
    for r in runs:
        w = r.get("cpu") or {}
        wall += w.get("wall_s", 0.0)
        for name, v in (w.get("cpu_s") or {}).items():
            if v is not None:
                cpu[name] = cpu.get(name, 0.0) + v
    out["cpu_s"] = {k: round(v, 4) for k, v in cpu.items()}
    out["cpu_wall_s"] = round(wall, 3)
    out["cpu_ms_per_req"] = {k: round(1000 * v / len(samples), 3) for k, v in cpu.items()} if samples else {}
    busy = [
        r["cpu"]["machine_busy_pct"]
        for r in runs
        if r.get("cpu") and r["cpu"].get("machine_busy_pct") is not None
    ]
    steal = [
        r["cpu"]["machine_steal_pct"]
        for r in runs
        if r.get("cpu") and r["cpu"].get("machine_steal_pct") is not None
    ]
    out["machine_busy_pct"] = max(busy) if busy else None
    out["machine_steal_pct"] = max(steal) if steal else None
    return out


# ------------------------------------------------------------------ the run


@dataclass
class Point:
    id: str
    kind: str  # nonstream | stream | chunks | saturation
    scenario_key: str
    conc: int
    seconds: float


def plan_points(args: argparse.Namespace) -> list[Point]:
    pts = [Point(f"nonstream-c{c}", "nonstream", "ns", c, args.seconds) for c in args.ns_conc]
    pts += [Point(f"stream-c{c}", "stream", "stream", c, args.seconds) for c in args.stream_conc]
    pts.append(Point("chunks-c1", "chunks", "chunks", 1, args.chunk_seconds))
    pts.append(Point(f"saturation-c{args.sat_conc}", "saturation", "ns", args.sat_conc, args.sat_seconds))
    if args.only:
        pat = re.compile(args.only)
        pts = [p for p in pts if pat.search(p.id)]
    return pts


def loadgen_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def settle(watch: dict[str, int | None], max_s: float = 3.0) -> None:
    """Wait until the watched processes are (nearly) idle: less than 10% of a core over 0.2 s,
    twice in a row, so a window does not inherit the previous phase's tail work."""
    t_end = time.monotonic() + max_s
    last = None
    calm = 0
    while time.monotonic() < t_end:
        pm = procstat.ppid_map()
        now = sum(sum(procstat.tree_cpu_seconds(p, pm).values()) for p in watch.values() if p)
        if last is not None and now - last < 0.02:
            calm += 1
            if calm >= 2:
                return
        else:
            calm = 0
        last = now
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace, tgt: Target, scenarios: dict[str, str]) -> dict[str, Any]:
    from services.client.client import GatewayClient

    url = tgt.emulator_url.rstrip("/") + "/v1/chat/completions"
    # the services (not the broker: shared brokers are never idle) settle between phases
    services = {n: p for n, p in tgt.procs.items() if n != "kafka"}
    watch = dict(tgt.procs)
    points_out = []
    t_start = time.monotonic()
    http = Direct(args.direct_client, args.timeout)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(http.aclose)
        gw = await stack.enter_async_context(
            GatewayClient(
                tgt.bootstrap,
                tenant_id=args.tenant,
                user_id="bench",
                topic_prefix=tgt.topic_prefix,
                timeout_s=args.timeout,
            )
        )
        # warm both paths: connections, metadata, partition leaders and, for a broker started a moment
        # ago, the JVM's JIT (a fresh broker costs several times more CPU per request for a minute)
        for stream in (False, True):
            for _ in range(3):
                await make_direct(http, url, scenarios["ns"], stream)(0)
                await make_gateway(gw, ALIASES["ns"], stream, args.timeout)(0)
        if args.warmup > 0:
            log(f"warm-up: {args.warmup:g} s of gateway traffic")
            await closed_loop(
                make_gateway(gw, ALIASES["ns"], False, args.timeout),
                8,
                args.warmup * 0.7,
                args.cap,
                args.timeout,
            )
            await closed_loop(
                make_gateway(gw, ALIASES["stream"], True, args.timeout),
                8,
                args.warmup * 0.3,
                args.cap,
                args.timeout,
            )
        for i, p in enumerate(plan_points(args)):
            scen = scenarios[p.scenario_key]
            stream = p.kind in ("stream", "chunks")
            fns = {
                "direct": make_direct(http, url, scen, stream),
                "gateway": make_gateway(gw, ALIASES[p.scenario_key], stream, args.timeout),
            }
            rounds = 1 if p.kind == "saturation" else args.rounds
            per_round = p.seconds / rounds
            cap = max(1, args.cap // rounds)
            runs: dict[str, list[dict[str, Any]]] = {"direct": [], "gateway": []}
            calib = procstat.calibrate()
            for r in range(rounds):
                order = ["direct", "gateway"] if (i + r) % 2 == 0 else ["gateway", "direct"]
                for side in order:
                    fn = fns[side]
                    # warm-up: a few requests per worker, not measured
                    await closed_loop(fn, p.conc, min(1.0, per_round / 4), p.conc * 2, args.timeout)
                    await settle(services)
                    win = procstat.CpuWindow(watch).start()
                    lg0 = loadgen_cpu()
                    res = await closed_loop(fn, p.conc, per_round, cap, args.timeout)
                    await asyncio.sleep(args.settle)  # the tail (usage/audit events) belongs to this window
                    res["cpu"] = win.stop()
                    res["cpu"]["cpu_s"]["loadgen"] = round(loadgen_cpu() - lg0, 4)
                    runs[side].append(res)
            point = {
                "id": p.id,
                "kind": p.kind,
                "conc": p.conc,
                "scenario": scen,
                "alias": ALIASES[p.scenario_key],
                "upstream_model": upstream_model(scen),
                "calib_ms": calib,
                "direct": summarise(runs["direct"]),
                "gateway": summarise(runs["gateway"]),
            }
            point["added"] = added(point)
            point["gateway"]["cpu_ms_per_req_net_of_idle"] = net_of_idle(point, gateway_procs(tgt.procs))
            points_out.append(point)
            log_point(point, tgt)
    return {"points": points_out, "wall_s": round(time.monotonic() - t_start, 1)}


def added(point: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("lat_ms", "ttft_ms"):
        d, g = point["direct"].get(key), point["gateway"].get(key)
        if d and g:
            out[key] = {
                q: (round(g[q] - d[q], 3) if g.get(q) is not None and d.get(q) is not None else None)
                for q in ("p50", "p90", "p99", "mean")
            }
    return out


def net_of_idle(point: dict[str, Any], names: list[str]) -> dict[str, float]:
    """Gateway CPU per request minus each process's idle rate (its CPU per second during the direct
    phases of the same point, when no gateway traffic flows) over the gateway window."""
    d, g = point["direct"], point["gateway"]
    if not (g["ok"] and d.get("cpu_wall_s") and g.get("cpu_wall_s")):
        return {}
    out = {}
    for n in names:
        if n in g["cpu_s"] and n in d["cpu_s"]:
            idle_rate = d["cpu_s"][n] / d["cpu_wall_s"]
            out[n] = round(1000 * (g["cpu_s"][n] - idle_rate * g["cpu_wall_s"]) / g["ok"], 3)
    return out


def gateway_cpu(side: dict[str, Any], names: list[str]) -> float | None:
    per = side.get("cpu_ms_per_req") or {}
    vals = [per[n] for n in names if per.get(n) is not None]
    return round(sum(vals), 3) if vals else None


def log_point(p: dict[str, Any], tgt: Target) -> None:
    d, g = p["direct"], p["gateway"]
    key = "ttft_ms" if p["kind"] in ("stream", "chunks") else "lat_ms"
    cpu = gateway_cpu(g, gateway_procs(tgt.procs))
    log(
        f"{p['id']}: {key[:-3]} p50 {fmt(d[key]['p50'] if d.get(key) else None)} -> "
        f"{fmt(g[key]['p50'] if g.get(key) else None)} ms, p99 {fmt(d[key]['p99'] if d.get(key) else None)} -> "
        f"{fmt(g[key]['p99'] if g.get(key) else None)} ms, rps {fmt(d['rps'])} -> {fmt(g['rps'])}, "
        f"gateway CPU {fmt(cpu)} ms/req, errors {d['n_errors']}/{g['n_errors']}"
    )


# ------------------------------------------------------------------ report


def fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.{nd}f}"
    return str(v)


def plus(v: float | None) -> str:
    return "n/a" if v is None else ("+" if v >= 0 else "") + fmt(float(v))


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def errs(side: dict[str, Any]) -> str:
    if not side["n_errors"]:
        return "0"
    return f"{side['n_errors']} ({', '.join(f'{k}:{v}' for k, v in side['errors'].items())})"


def render(meta: dict[str, Any], points: list[dict[str, Any]]) -> str:
    gw_names = meta["gateway_processes"]
    others = [n for n in meta["processes"] if n not in gw_names]
    L = [f"# Kafka gateway benchmark ({meta['date']})\n"]
    L.append(
        f"- host {meta['host']}, {meta['nproc']} cores; python {meta['python']}; "
        f"routers={meta['routers']} executors={meta['executors']}; wall {meta['wall_s']} s"
    )
    L.append(
        f"- broker {meta['bootstrap']}; topic prefix `{meta['topic_prefix']}`; emulator {meta['emulator']}"
    )
    L.append(
        f"- scenarios (emulator): non-streaming `{meta['scenarios']['ns']}`, streaming "
        f"`{meta['scenarios']['stream']}`, chunk coalescing `{meta['scenarios']['chunks']}`; "
        f"{meta['rounds']} alternating direct/gateway rounds per point, {meta['seconds']} s per point and side"
    )
    for n in meta["notes"]:
        L.append(f"- note: {n}")
    L.append("")
    L.append(
        f"Latencies in ms. direct = {meta['direct_client']} straight to the emulator; gateway = "
        "GatewayClient through Kafka (3 hops); `+` = gateway minus direct at the same percentile.\n"
    )

    def table(rows: list[dict[str, Any]], key: str, title: str) -> None:
        if not rows:
            return
        L.append(f"## {title}\n")
        L.append(
            "| point | conc | p50 direct | p50 gw | +p50 | p90 direct | p90 gw | +p90 | p99 direct | p99 gw "
            "| +p99 | req/s direct | req/s gw | n direct / gw | errors direct / gw |"
        )
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for p in rows:
            d, g, a = p["direct"].get(key) or {}, p["gateway"].get(key) or {}, p["added"].get(key) or {}
            L.append(
                f"| {p['id']} | {p['conc']} | {fmt(d.get('p50'))} | {fmt(g.get('p50'))} | {plus(a.get('p50'))} "
                f"| {fmt(d.get('p90'))} | {fmt(g.get('p90'))} | {plus(a.get('p90'))} | {fmt(d.get('p99'))} "
                f"| {fmt(g.get('p99'))} | {plus(a.get('p99'))} | {fmt(p['direct']['rps'])} "
                f"| {fmt(p['gateway']['rps'])} | {p['direct']['ok']} / {p['gateway']['ok']} "
                f"| {errs(p['direct'])} / {errs(p['gateway'])} |"
            )
        L.append("")

    table(
        [p for p in points if p["kind"] in ("nonstream", "saturation")],
        "lat_ms",
        "Non-streaming chat: whole-request latency",
    )
    table(
        [p for p in points if p["kind"] in ("stream", "chunks")],
        "ttft_ms",
        "Streaming chat: time to first token (direct: first SSE content chunk; gateway: first chunk event)",
    )
    table(
        [p for p in points if p["kind"] in ("stream", "chunks")],
        "lat_ms",
        "Streaming chat: time to the end of the stream",
    )

    hops = [p for p in points if p["gateway"].get("hops_ms")]
    if hops:
        L.append("## Where the gateway's time goes (non-streaming, p50 / p90 ms)\n")
        L.append(
            "From the events' own timestamps: `client -> executor` = request created by the SDK until the "
            "executor starts on it (llm.requests, router, llm.exec: two hops); `executor` = executor start "
            "to result event (incl. the provider call); `executor -> client` = result event created until "
            "the SDK returns it (llm.replies: one hop). Compare `provider call` with the direct p50.\n"
        )
        L.append(
            "| point | direct p50 | gateway p50 | client -> executor | executor | of which provider call "
            "| executor -> client |"
        )
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        for p in hops:
            h = p["gateway"]["hops_ms"]
            pp = {k: f"{fmt(v.get('p50'))} / {fmt(v.get('p90'))}" for k, v in h.items()}
            L.append(
                f"| {p['id']} | {fmt(p['direct']['lat_ms']['p50'])} | {fmt(p['gateway']['lat_ms']['p50'])} "
                f"| {pp['client_to_executor']} | {pp['executor']} | {pp['provider_call']} "
                f"| {pp['executor_to_client']} |"
            )
        L.append("")

    st = [p for p in points if p["kind"] in ("stream", "chunks")]
    if st:
        L.append("## Chunk events\n")
        L.append(
            "| point | scenario | content chunks/stream direct | chunk events/stream gw (mean, min-max) "
            "| min gap between non-final events, emitted (ms) | median per-stream min gap, emitted "
            "| min gap, arrival at client | emitted gaps < 19.5 ms / all | target: >= 20 ms |"
        )
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---|")
        for p in st:
            d, g = p["direct"], p["gateway"]
            cd, cg = d.get("chunks_per_stream") or {}, g.get("chunks_per_stream") or {}
            ge, ga = g.get("min_gap_emit_ms") or {}, g.get("min_gap_arrival_ms") or {}
            gaps = g.get("chunk_gaps") or {}
            ok = None if ge.get("min") is None else ge["min"] >= TARGETS["min_chunk_gap_ms"] - 0.5
            L.append(
                f"| {p['id']} | `{p['scenario']}` | {fmt(cd.get('mean'))} | {fmt(cg.get('mean'))} "
                f"({cg.get('min')}-{cg.get('max')}) | {fmt(ge.get('min'))} | {fmt(ge.get('p50_of_streams'))} "
                f"| {fmt(ga.get('min'))} | {gaps.get('under_window')} / {gaps.get('total')} | {verdict(ok)} |"
            )
        L.append("")
        L.append(
            "Emitted = the chunk events' `occurred_at` (set by the executor when it publishes); arrival = "
            "when the client SDK handed them out (a consumer fetch can deliver two at once). "
            "The final chunk may follow the previous one sooner: it is not a coalescing window. "
            "A systematic problem shows as many short gaps; a lone gap of 18-19.5 ms on a loaded machine is "
            "usually the executor being preempted between its window check and stamping `occurred_at`.\n"
        )

    L.append("## CPU per request (ms), gateway phases\n")
    L.append(
        "CPU seconds (utime+stime, /proc) of each process tree in the measured window (load + a short "
        "settle) divided by the requests completed in it. `gateway total` = "
        + " + ".join(gw_names)
        + "; `net of idle` subtracts what those processes burn with no traffic (their CPU rate during "
        "the direct phases of the same point, which for a shared broker includes its other clients); "
        "the emulator and the load generator are not gateway costs (shown for scale; "
        "`emulator direct` is the emulator's own cost per request without the gateway). The target "
        "applies to non-streaming requests; a stream's cost is per stream.\n"
    )
    cols = (
        gw_names
        + ["gateway total", "net of idle"]
        + others
        + ["emulator direct", "loadgen gw", "loadgen direct", "machine busy %", "target <= 4 ms"]
    )
    L.append("| point | " + " | ".join(cols) + " |")
    L.append("|---|" + "---:|" * (len(cols) - 1) + "---|")
    for p in points:
        g, d = p["gateway"], p["direct"]
        per = g.get("cpu_ms_per_req") or {}
        tot = gateway_cpu(g, gw_names)
        net = g.get("cpu_ms_per_req_net_of_idle") or {}
        net_tot = round(sum(net.values()), 3) if net else None
        cells = (
            [fmt(per.get(n)) for n in gw_names] + [fmt(tot), fmt(net_tot)] + [fmt(per.get(n)) for n in others]
        )
        cells += [
            fmt((d.get("cpu_ms_per_req") or {}).get("emulator")),
            fmt(per.get("loadgen")),
            fmt((d.get("cpu_ms_per_req") or {}).get("loadgen")),
            fmt(g.get("machine_busy_pct")),
        ]
        ok = (
            None
            if tot is None or p["kind"] not in ("nonstream", "saturation")
            else tot <= TARGETS["cpu_ms_per_req"]
        )
        cells.append(verdict(ok) if ok is not None else "(stream)")
        L.append(f"| {p['id']} | " + " | ".join(cells) + " |")
    L.append("")
    idle: dict[str, list[float]] = {}
    for p in points:
        d = p["direct"]
        if d.get("cpu_wall_s"):
            for n in gw_names:
                idle.setdefault(n, []).append(1000 * (d.get("cpu_s") or {}).get(n, 0.0) / d["cpu_wall_s"])
    if idle:
        L.append(
            "- idle cost: CPU of the gateway processes while the direct phases ran (no gateway traffic; a "
            "shared broker's other clients included), median ms per second: "
            + ", ".join(f"{n} {sorted(v)[len(v) // 2]:.0f}" for n, v in idle.items())
            + ". At a low request rate this idle cost is a large part of the CPU per request.\n"
        )

    L.append("## Targets\n")
    L.append("| target | measured | verdict |")
    L.append("|---|---:|---|")
    c1 = next((p for p in points if p["kind"] == "nonstream" and p["conc"] == 1), None)
    if c1:
        a = c1["added"]["lat_ms"]
        L.append(
            f"| added p50, non-streaming, c=1 <= {TARGETS['added_p50_c1_ms']:g} ms | {plus(a['p50'])} ms "
            f"| {verdict(a['p50'] is not None and a['p50'] <= TARGETS['added_p50_c1_ms'])} |"
        )
        L.append(
            f"| added p99, non-streaming, c=1 <= {TARGETS['added_p99_c1_ms']:g} ms | {plus(a['p99'])} ms "
            f"| {verdict(a['p99'] is not None and a['p99'] <= TARGETS['added_p99_c1_ms'])} |"
        )
    for p in points:
        if p["kind"] in ("nonstream", "saturation"):
            tot = gateway_cpu(p["gateway"], gw_names)
            net = p["gateway"].get("cpu_ms_per_req_net_of_idle") or {}
            L.append(
                f"| CPU per request, all gateway processes + broker, {p['id']} <= "
                f"{TARGETS['cpu_ms_per_req']:g} ms | {fmt(tot)} ms (net of idle "
                f"{fmt(round(sum(net.values()), 3) if net else None)}) "
                f"| {verdict(None if tot is None else tot <= TARGETS['cpu_ms_per_req'])} |"
            )
    for p in points:
        if p["kind"] == "chunks":
            g = p["gateway"].get("min_gap_emit_ms") or {}
            L.append(
                f"| chunk events <= 1 per 20 ms after the first ({p['scenario']}) | min gap "
                f"{fmt(g.get('min'))} ms, {fmt((p['gateway'].get('chunks_per_stream') or {}).get('mean'))} "
                f"events/stream | {verdict(None if g.get('min') is None else g['min'] >= 19.5)} |"
            )
    L.append("")
    cal = sorted(p["calib_ms"] for p in points)
    if cal:
        L.append(
            f"- machine speed probe (pure-Python loop, ms, lower = faster): min {cal[0]}, max {cal[-1]}"
            + (" -- the machine's speed drifted during the run" if cal[-1] > 1.15 * cal[0] else "")
        )
    steal = [p[s].get("machine_steal_pct") for p in points for s in ("direct", "gateway")]
    steal = [x for x in steal if x is not None]
    if steal:
        L.append(f"- CPU steal: max {max(steal):.1f}%")
    L.append("")
    return "\n".join(L)


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.kafka_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: ~30 s of load, one round per point")
    ap.add_argument(
        "--attach",
        metavar="STATE_DIR",
        help="measure the stack recorded in STATE_DIR/stack.json "
        "(started with LLMGW_CONFIG=bench/config.yaml) instead of starting one",
    )
    ap.add_argument("--routers", type=int, default=1)
    ap.add_argument("--executors", type=int, default=1)
    ap.add_argument(
        "--edge", action="store_true", help="also start the HTTP edge (idle here; its CPU is counted)"
    )
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per point and side")
    ap.add_argument("--chunk-seconds", type=float, default=6.0, help="seconds of the chunk-coalescing point")
    ap.add_argument(
        "--sat-seconds", type=float, default=10.0, help="seconds of the saturation point per side"
    )
    ap.add_argument("--sat-conc", type=int, default=64)
    ap.add_argument("--ns-conc", type=lambda s: [int(x) for x in s.split(",")], default=[1, 32])
    ap.add_argument("--stream-conc", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16])
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds of unmeasured gateway traffic first")
    ap.add_argument("--rounds", type=int, default=2, help="alternating direct/gateway rounds per point")
    ap.add_argument("--cap", type=int, default=50_000, help="request cap per point and side")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, s")
    ap.add_argument("--settle", type=float, default=0.3, help="seconds after a phase still counted for CPU")
    ap.add_argument("--only", help="regex on point ids (nonstream-c1, stream-c16, chunks-c1, saturation-c64)")
    ap.add_argument(
        "--direct-client",
        choices=["httpx", "httpx-shared", "aiohttp"],
        default="httpx",
        help="direct baseline client: httpx = one httpx.AsyncClient per load worker (default); "
        "httpx-shared = one for all (its pool costs CPU per request that grows with "
        "concurrency); aiohttp = one shared session (the cheapest)",
    )
    ap.add_argument("--tenant", default="demo")
    ap.add_argument("--ns-scenario", default=DEFAULT_SCENARIOS["ns"], help="emulator scenario, non-streaming")
    ap.add_argument(
        "--stream-scenario", default=DEFAULT_SCENARIOS["stream"], help="emulator scenario, streaming"
    )
    ap.add_argument(
        "--chunk-scenario", default=DEFAULT_SCENARIOS["chunks"], help="emulator scenario, coalescing"
    )
    ap.add_argument("--out", help="JSON result path (default bench/results/kafka-<timestamp>.json)")
    ap.add_argument(
        "--keep", action="store_true", help="leave the stack running at the end (prints its state dir)"
    )
    ap.add_argument(
        "--write-config", metavar="PATH", help="write the gateway config for these scenarios and exit"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.chunk_seconds, args.sat_seconds, args.rounds = 2.0, 2.0, 2.0, 1
        args.warmup = min(args.warmup, 4.0)
    return args


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = {"ns": args.ns_scenario, "stream": args.stream_scenario, "chunks": args.chunk_scenario}
    if args.write_config:
        text = (
            "# Gateway config for bench.kafka_bench: config/demo.yaml plus one alias per benchmark scenario.\n"
            "# Generated by `python -m bench.kafka_bench --write-config PATH`.\n"
        )
        text += yaml.safe_dump(bench_config(ROOT / "config" / "demo.yaml", scenarios), sort_keys=False)
        Path(args.write_config).write_text(text)
        print(f"wrote {args.write_config}")
        return 0
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of the project
        uvloop = None

    # SIGTERM stops the run like Ctrl-C, so the stack we started is always taken down
    signal.signal(signal.SIGTERM, _interrupt)
    tgt = attach(args, scenarios) if args.attach else start_stack(args, scenarios)
    try:
        missing = [n for n, p in tgt.procs.items() if not p]
        if missing:
            tgt.notes.append(f"no pid (CPU not measured) for: {', '.join(missing)}")
        meta: dict[str, Any] = {
            "date": dt.datetime.now().isoformat(timespec="seconds"),
            "host": platform.node(),
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "argv": sys.argv,
            "bootstrap": tgt.bootstrap,
            "topic_prefix": tgt.topic_prefix,
            "emulator": tgt.emulator_url,
            "state_dir": str(tgt.state_dir),
            "routers": args.routers if not args.attach else sum(n.startswith("router") for n in tgt.procs),
            "executors": args.executors
            if not args.attach
            else sum(n.startswith("executor") for n in tgt.procs),
            "processes": {n: {"pid": p, "cmd": procstat.cmdline(p)[:300]} for n, p in tgt.procs.items()},
            "gateway_processes": gateway_procs(tgt.procs),
            "scenarios": scenarios,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "targets": TARGETS,
            "notes": tgt.notes,
            "quick": args.quick,
            "direct_client": args.direct_client,
        }
        pts = plan_points(args)
        est = args.warmup + sum(
            p.seconds * 2 + (2.5 if p.kind != "saturation" else 1.5) * args.rounds for p in pts
        )
        log(f"{len(pts)} points, about {est:.0f} s")
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop) if uvloop else asyncio.Runner()
        with runner:
            out = runner.run(run(args, tgt, scenarios))
        meta["wall_s"] = out["wall_s"]
        result = {"meta": meta, "points": out["points"]}
        path = Path(args.out) if args.out else RESULTS / f"kafka-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
        print(render(meta, out["points"]))
        log(f"wrote {path}")
        return 0
    finally:
        if tgt.stack is not None:
            if args.keep:
                log(
                    f"stack left running: LLMGW_STATE_DIR={tgt.state_dir} llmgw down  (or kill the pids above)"
                )
            else:
                log("stopping the stack")
                with contextlib.suppress(Exception):
                    tgt.stack.down()
                if tgt.stack.settings.external_kafka:
                    from .stackutil import delete_topics

                    try:
                        n = len(delete_topics(tgt.bootstrap, tgt.topic_prefix))
                        log(f"deleted this run's {n} topics ({tgt.topic_prefix}*) from the shared broker")
                    except Exception as exc:  # noqa: BLE001 - best effort
                        log(f"could not delete topics {tgt.topic_prefix}*: {exc}")


if __name__ == "__main__":
    sys.exit(main())

"""Embeddings benchmarks (issue 10, 12(b) and 12(c)), in one run on a throw-away stack with the edge.

    python -m bench.embed_bench              # ~3 min: (b) and (c), two rounds each
    python -m bench.embed_bench --quick      # smoke run: ~2 s per phase, one round
    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python -m bench.embed_bench   # on a running broker

(b) **Through the edge**: single-input ``POST /v1/embeddings`` (``demo-embed``) at concurrency
1 and 64, closed loop, against the same body POSTed straight to the emulator's
``/v1/embeddings`` (what the executor sends), direct and edge phases alternating: added
latency (p50/p90/p99) and requests/s. Batching is on (the window of ``--window-ms``).

(c) **Micro-batching**: at concurrency 64, single-input requests of one tenant through the
edge, once with batching on (``embed_batch_window_ms = --window-ms``) and once off (0), the
modes alternating (``--rounds``); between modes the executor is restarted on a rewritten
configuration. Provider calls are counted at the emulator (``GET /_emulator/calls``, cleared
before each phase). Targets: calls <= 1/8 of requests with batching on; p99 on - p99 off <=
window + 5 ms.

One executor by default (``--executors``): a batch only forms inside one executor process.
Output: the tables on stdout, the data in ``bench/results/embed-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from bench import procstat
from bench.kafka_bench import closed_loop, log, summary
from services.runtime.settings import ROOT

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ALIAS, UPSTREAM = "demo-embed", "text-embedding-emu"
DEMO_KEY = "sk-llmgw-demo"
TEXT = "an embeddings benchmark input of about a dozen words, as a search query would be"
Req = Callable[[int], Awaitable[dict[str, Any]]]


def write_config(path: Path, window_ms: float) -> None:
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg.setdefault("defaults", {})["embed_batch_window_ms"] = window_ms
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def start(args: argparse.Namespace) -> tuple[Any, Any, Path]:
    from services.cli.stack import Stack

    from .stackutil import new_settings

    settings = new_settings()
    cfg = settings.state_dir / "embed-bench.yaml"
    write_config(cfg, args.window_ms)
    settings = dataclasses.replace(settings, config_path=cfg)
    stack = Stack(settings)
    log(
        f"starting the stack in {settings.state_dir} (topic prefix {settings.topic_prefix}, "
        f"executors={args.executors}, edge)"
    )
    t0 = time.monotonic()
    stack.up(routers=1, executors=args.executors, edge=True)
    log(f"stack ready in {time.monotonic() - t0:.1f}s")
    return stack, settings, cfg


def set_window(stack: Any, cfg: Path, window_ms: float, executors: int) -> None:
    """Rewrite the configuration and restart the executors on it (each reads it at start)."""
    write_config(cfg, window_ms)
    for i in range(executors):
        stack.restart(f"executor-{i}")


# ------------------------------------------------------------------ requests


def direct(session: aiohttp.ClientSession, emulator: str) -> Req:
    url = f"{emulator}/v1/embeddings"
    body = orjson.dumps({"model": UPSTREAM, "input": [TEXT], "encoding_format": "float"})

    async def one(i: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        async with session.post(url, data=body, headers={"content-type": "application/json"}) as r:
            raw = await r.read()
            if r.status != 200:
                raise RuntimeError(f"direct: HTTP {r.status}: {raw[:200]!r}")
        return {"lat": (time.perf_counter() - t0) * 1000}

    return one


def edge(session: aiohttp.ClientSession, edge_url: str) -> Req:
    url = f"{edge_url}/v1/embeddings"
    body = orjson.dumps({"model": ALIAS, "input": TEXT})
    headers = {"content-type": "application/json", "authorization": f"Bearer {DEMO_KEY}"}

    async def one(i: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        async with session.post(url, data=body, headers=headers) as r:
            raw = await r.read()
            if r.status != 200:
                raise RuntimeError(f"edge: HTTP {r.status}: {raw[:200]!r}")
            overhead = float(r.headers.get("x-llmgw-overhead-ms", "nan"))
        return {"lat": (time.perf_counter() - t0) * 1000, "overhead": overhead}

    return one


async def phase(fn: Req, conc: int, seconds: float, cap: int) -> dict[str, Any]:
    run = await closed_loop(fn, conc, seconds, cap, hard_s=30)
    samples = run["samples"]
    out = {
        "conc": conc,
        "ok": len(samples),
        "errors": run["errors"],
        "elapsed_s": round(run["elapsed_s"], 3),
        "rps": round(len(samples) / run["elapsed_s"], 1) if run["elapsed_s"] else None,
        "lat_ms": summary([s["lat"] for s in samples]),
        "_lat": [s["lat"] for s in samples],
    }
    if samples and "overhead" in samples[0]:
        out["_overhead"] = [s["overhead"] for s in samples if s["overhead"] == s["overhead"]]
    return out


def merged(phases: list[dict[str, Any]]) -> dict[str, Any]:
    lat = [v for p in phases for v in p["_lat"]]
    elapsed = sum(p["elapsed_s"] for p in phases)
    errors: dict[str, int] = {}
    for p in phases:
        for k, v in p["errors"].items():
            errors[k] = errors.get(k, 0) + v
    out = {
        "ok": len(lat),
        "errors": errors,
        "elapsed_s": round(elapsed, 3),
        "rps": round(len(lat) / elapsed, 1) if elapsed else None,
        "lat_ms": summary(lat),
    }
    if "_overhead" in phases[0]:
        out["overhead_ms"] = summary([v for p in phases for v in p["_overhead"]])
    for key in ("calls", "requests_seen"):
        if key in phases[0]:
            out[key] = sum(p[key] for p in phases)
    return out


async def emulator_calls(session: aiohttp.ClientSession, emulator: str, clear: bool = False) -> int:
    url = f"{emulator}/_emulator/calls?kind=embeddings"
    if clear:
        async with session.delete(url) as r:
            r.raise_for_status()
        return 0
    async with session.get(url) as r:
        r.raise_for_status()
        calls = await r.json()
    return sum(1 for c in calls if c.get("model") == UPSTREAM)


# ------------------------------------------------------------------ the run


async def measure(args: argparse.Namespace, stack: Any, settings: Any, cfg: Path) -> dict[str, Any]:
    emulator = f"http://127.0.0.1:{settings.emulator_port}"
    edge_url = f"http://{settings.edge_host}:{settings.edge_port}"
    conn = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as session:
        d, e = direct(session, emulator), edge(session, edge_url)
        log(f"warm-up: {args.warmup:g} s through the edge")
        await phase(e, 16, args.warmup, 10**9)

        # (b) through the edge vs direct, batching on
        through: dict[int, dict[str, list[dict[str, Any]]]] = {}
        for conc in args.conc:
            sides: dict[str, list[dict[str, Any]]] = {"direct": [], "edge": []}
            for rnd in range(args.rounds):
                order = [("direct", d), ("edge", e)] if rnd % 2 == 0 else [("edge", e), ("direct", d)]
                for name, fn in order:
                    sides[name].append(await phase(fn, conc, args.seconds, args.cap))
                    log(
                        f"(b) c={conc} round {rnd + 1} {name}: {sides[name][-1]['rps']} req/s, "
                        f"p50 {sides[name][-1]['lat_ms']['p50']} ms"
                    )
            through[conc] = sides

        # (c) batching on vs off at c=64, modes alternating (each switch restarts the executors)
        modes: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
        current = "on"
        plan = ["on", "off", "off", "on"] * args.rounds if args.rounds > 1 else ["on", "off"]
        cpu: dict[str, dict[str, Any]] = {}
        for mode in plan[: 2 * args.rounds]:
            if mode != current:
                log(f"(c) restarting the executor(s) with batching {mode}")
                set_window(stack, cfg, args.window_ms if mode == "on" else 0, args.executors)
                current = mode
                await phase(e, 16, min(args.warmup, 2.0), 10**9)  # unmeasured: the new executor warms up
            await emulator_calls(session, emulator, clear=True)
            procs = {c.name: c.pid for c in stack.load() if c.name.startswith(("executor", "router", "edge"))}
            win = procstat.CpuWindow(procs).start()
            p = await phase(e, args.batch_conc, args.seconds, args.cap)
            cpu.setdefault(mode, {"cpu_s": {}, "ok": 0})
            w = win.stop()
            for k, v in (w["cpu_s"] or {}).items():
                cpu[mode]["cpu_s"][k] = round(cpu[mode]["cpu_s"].get(k, 0.0) + (v or 0.0), 4)
            cpu[mode]["ok"] += p["ok"]
            p["calls"] = await emulator_calls(session, emulator)
            p["requests_seen"] = p["ok"] + sum(p["errors"].values())
            modes[mode].append(p)
            log(
                f"(c) batching {mode}: {p['ok']} requests, {p['calls']} provider calls, "
                f"p99 {p['lat_ms']['p99']} ms"
            )
        if current != "on":
            set_window(stack, cfg, args.window_ms, args.executors)
    return {
        "through": {c: {k: merged(v) for k, v in s.items()} for c, s in through.items()},
        "batching": {k: merged(v) for k, v in modes.items() if v},
        "cpu": cpu,
    }


def fmt(v: Any, nd: int = 2) -> str:
    return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def render(res: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"## (b) Embeddings through the edge ({ALIAS}, one input, batching window {args.window_ms:g} ms)",
        "",
        "| c | p50 direct | p50 edge | +p50 | p90 +  | p99 direct | p99 edge | +p99 | req/s direct | req/s edge"
        " | edge overhead p50 (header) | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for conc, s in res["through"].items():
        dl, el = s["direct"]["lat_ms"], s["edge"]["lat_ms"]

        def plus(q: str, dl: dict = dl, el: dict = el) -> str:
            return fmt(el[q] - dl[q]) if el[q] is not None and dl[q] is not None else "-"

        errors = {**s["direct"]["errors"], **{f"edge:{k}": v for k, v in s["edge"]["errors"].items()}}
        ov = (s["edge"].get("overhead_ms") or {}).get("p50")
        lines.append(
            f"| {conc} | {fmt(dl['p50'])} | {fmt(el['p50'])} | {plus('p50')} | {plus('p90')} | "
            f"{fmt(dl['p99'])} | {fmt(el['p99'])} | {plus('p99')} | {fmt(s['direct']['rps'], 1)} | "
            f"{fmt(s['edge']['rps'], 1)} | {fmt(ov)} | {errors or 'none'} |"
        )
    b = res["batching"]
    lines += [
        "",
        f"## (c) Micro-batching: c={args.batch_conc}, single-input requests of one tenant",
        "",
        "| batching | requests | provider calls | calls/request | p50 ms | p99 ms | req/s | executor CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in ("on", "off"):
        if mode not in b:
            continue
        m = b[mode]
        ratio = m["calls"] / m["requests_seen"] if m.get("requests_seen") else None
        c = res["cpu"].get(mode, {})
        ex = sum(v for k, v in c.get("cpu_s", {}).items() if k.startswith("executor"))
        per = 1000 * ex / c["ok"] if c.get("ok") else None
        label = f"on ({args.window_ms:g} ms)" if mode == "on" else "off (0 ms)"
        lines.append(
            f"| {label} | {m['requests_seen']} | {m['calls']} | {fmt(ratio, 3)} | {fmt(m['lat_ms']['p50'])} | "
            f"{fmt(m['lat_ms']['p99'])} | {fmt(m['rps'], 1)} | {fmt(per)} |"
        )
    if "on" in b and "off" in b:
        on, off = b["on"], b["off"]
        ratio = on["calls"] / on["requests_seen"] if on["requests_seen"] else None
        added = (
            (on["lat_ms"]["p99"] - off["lat_ms"]["p99"])
            if on["lat_ms"]["p99"] and off["lat_ms"]["p99"]
            else None
        )
        limit = args.window_ms + 5
        lines += [
            "",
            "| target | value | limit | met |",
            "|---|---:|---:|---|",
            f"| provider calls per request, batching on | {fmt(ratio, 3)} | 0.125 | "
            f"{'yes' if ratio is not None and ratio <= 0.125 else 'NO'} |",
            f"| added p99, on - off (ms) | {fmt(added)} | {limit:g} | "
            f"{'yes' if added is not None and added <= limit else 'NO'} |",
        ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.embed_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 s phases, one round, 2 s warm-up")
    ap.add_argument(
        "--seconds", type=float, default=None, help="length of each measured phase (10; --quick 2)"
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="direct/edge pairs per point, on/off pairs for (c) (2; --quick 1)",
    )
    ap.add_argument(
        "--warmup", type=float, default=None, help="seconds of unmeasured traffic first (10; --quick 2)"
    )
    ap.add_argument("--conc", type=int, nargs="+", default=[1, 64], help="concurrencies of (b)")
    ap.add_argument("--batch-conc", type=int, default=64, help="concurrency of (c)")
    ap.add_argument("--window-ms", type=float, default=5.0, help="embed_batch_window_ms when batching is on")
    ap.add_argument("--executors", type=int, default=1)
    ap.add_argument(
        "--cap", type=int, default=9000, help="most requests per phase (the emulator keeps 10 000 calls)"
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    for name, full, quick in (("seconds", 10.0, 2.0), ("rounds", 2, 1), ("warmup", 10.0, 2.0)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stack, settings, cfg = start(args)
    try:
        try:
            import uvloop

            runner: Any = uvloop.run
        except ImportError:
            runner = asyncio.run
        res = runner(measure(args, stack, settings, cfg))
    finally:
        log("stopping the stack")
        stack.down()
        if settings.external_kafka:
            from .stackutil import delete_topics

            try:
                delete_topics(settings.bootstrap_servers, settings.topic_prefix)
            except Exception as exc:  # noqa: BLE001 - best effort
                log(f"could not delete topics {settings.topic_prefix}*: {exc}")
    report = render(res, args)
    print(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"embed-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "results": res,
                "report": report,
            },
            indent=1,
        )
    )
    print(f"\nResults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The HTTP scenario: the gateway's edge (OpenAI-compatible HTTP) measured with the
gateway-agnostic peer-bench harness (../shared/peer-bench/run.sh), against the same
Node mock upstream the other gateways were measured with.

    python -m bench.http_bench --quick                       # ~1 min smoke run
    python -m bench.http_bench                               # full suite (~5 min)
    LITELLM_API_KEY=sk-... python -m bench.http_bench --also litellm=http://127.0.0.1:4000

What it does:
1. starts the mock upstream ``node PEER_BENCH/mock/mock_upstream.js PORT`` (default 18080; an
   already running mock on that port is reused);
2. starts a throw-away stack with the edge (``bench.stackutil`` holder: own state dir, topic
   prefix and ports; the broker from ``KAFKA_BOOTSTRAP_SERVERS`` or one of its own), with
   ``LLMGW_MOCK_URL`` pointing ``mock-gpt`` (config/demo.yaml) at the mock;
3. runs ``run.sh EDGE_URL MOCK_URL --gateway-pid HOLDER`` with ``GATEWAY_API_KEY=sk-llmgw-demo``:
   the holder process is the root of exactly the stack's processes, so peer-bench's "gateway
   CPU ms/req" and RSS cover edge + router + executor (+ the broker when the stack runs its own);
4. also reads the CPU seconds of every stack process over the whole run (per process split);
5. stops everything it started. Results: bench/results/http-LABEL-<timestamp>.{md,json}.

Options not listed below are passed on to peer-bench's bench.py (e.g. ``--only nonstream``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import procstat, stackutil
from services.runtime.settings import ROOT

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PEER_BENCH = Path(os.environ.get("PEER_BENCH_DIR", ROOT.parent / "shared" / "peer-bench"))
DEMO_KEY = "sk-llmgw-demo"


def log(*a: object) -> None:
    print(time.strftime("%H:%M:%S"), "http_bench:", *a, file=sys.stderr, flush=True)


def port_open(port: int) -> bool:
    from services.cli.infra import port_open as _open

    return _open("127.0.0.1", port)


def mock_stats(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/__mock/stats", timeout=2) as r:
            return json.loads(r.read())
    except Exception:  # noqa: BLE001
        return None


def wait_for(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise SystemExit(f"{what} not ready after {timeout:.0f}s")


def stop(proc: subprocess.Popen[Any] | None, grace: float = 20) -> None:
    """SIGTERM the process group of a child we started (its own session), SIGKILL after ``grace``."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def warm_up(edge_url: str, api_key: str, seconds: float, conc: int = 8) -> int:
    """Unmeasured traffic through the edge: non-streaming and streaming mock-gpt requests."""
    import asyncio

    import httpx

    url = edge_url.rstrip("/") + "/v1/chat/completions"
    headers = {"authorization": f"Bearer {api_key}"}
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "warm-up"}], "max_tokens": 16}

    async def run() -> int:
        done = 0
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(timeout=30) as http:

            async def worker(i: int) -> None:
                nonlocal done
                while time.monotonic() < deadline:
                    b = body | ({"stream": True} if (done + i) % 3 == 0 else {})
                    try:
                        r = await http.post(url, json=b, headers=headers)
                        if r.status_code != 200:
                            raise SystemExit(f"warm-up request failed: {r.status_code} {r.text[:300]}")
                    except httpx.HTTPError as exc:
                        raise SystemExit(f"warm-up request failed: {type(exc).__name__}: {exc}") from None
                    done += 1

            await asyncio.gather(*(worker(i) for i in range(conc)))
        return done

    return asyncio.run(run())


def edge_available() -> bool:
    return (ROOT / "services" / "edge" / "__main__.py").exists()


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser(
        prog="python -m bench.http_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="peer-bench smoke run (~30 s of load)")
    ap.add_argument("--label", default="llmgw")
    ap.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="another gateway measured in the same run, interleaved (token from env NAME_API_KEY; "
        "it must route mock-gpt to the same mock)",
    )
    ap.add_argument("--mock-port", type=int, default=18080)
    ap.add_argument("--routers", type=int, default=1)
    ap.add_argument("--executors", type=int, default=1)
    ap.add_argument("--edge-workers", type=int, default=1)
    ap.add_argument(
        "--edge-url",
        help="measure an edge that is already running at this URL instead of starting "
        "a stack (its CPU then covers the process listening on that port only)",
    )
    ap.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of unmeasured traffic through the edge first (default 10, --quick 5)",
    )
    ap.add_argument("--api-key", default=os.environ.get("GATEWAY_API_KEY", DEMO_KEY))
    args, rest = ap.parse_known_args(argv)
    if args.warmup is None:
        args.warmup = 5.0 if args.quick else 10.0
    return args, rest


def main(argv: list[str] | None = None) -> int:
    args, passthrough = parse_args(argv)
    run_sh = PEER_BENCH / "run.sh"
    problems = []
    if not run_sh.exists():
        problems.append(f"peer-bench harness not found at {PEER_BENCH} (set PEER_BENCH_DIR)")
    if not shutil.which("node"):
        problems.append("node not found (Node 20 runs the mock upstream)")
    if not shutil.which("wrk"):
        problems.append("wrk not found: apt-get update && apt-get install -y wrk")
    if not args.edge_url and not edge_available():
        problems.append(
            "the HTTP edge (python -m services.edge) is not in this checkout yet; "
            "pass --edge-url to measure an edge running elsewhere"
        )
    if problems:
        for p in problems:
            print(f"http_bench: {p}", file=sys.stderr)
        return 2

    mock_url = f"http://127.0.0.1:{args.mock_port}"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_prefix = RESULTS / f"http-{re.sub(r'[^A-Za-z0-9_.-]+', '_', args.label)}-{stamp}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    mock: subprocess.Popen[Any] | None = None
    holder: subprocess.Popen[str] | None = None

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        # 1. the mock upstream
        if port_open(args.mock_port):
            if mock_stats(mock_url) is None:
                raise SystemExit(
                    f"port {args.mock_port} is in use by something that is not the peer-bench mock; "
                    "pass --mock-port"
                )
            log(f"reusing the mock already listening on {mock_url}")
        else:
            mock_log = open(out_prefix.with_name(out_prefix.name + "-mock.log"), "wb")  # noqa: SIM115
            mock = subprocess.Popen(
                ["node", str(PEER_BENCH / "mock" / "mock_upstream.js"), str(args.mock_port)],
                stdout=mock_log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            wait_for(lambda: mock_stats(mock_url) is not None, 20, "mock upstream")
            log(f"mock upstream pid {mock.pid} on {mock_url}")

        # 2. the stack, with the edge
        procs: dict[str, int | None] = {}
        info: dict[str, Any] = {}
        if args.edge_url:
            edge_url = args.edge_url.rstrip("/")
            gw_pid = procstat.pid_listening_on(int(edge_url.rsplit(":", 1)[1].split("/")[0]))
            procs["edge"] = gw_pid
        else:
            env = os.environ | {"LLMGW_MOCK_URL": mock_url}
            log(
                "starting the stack (edge, router, executor"
                + ("" if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") else ", own broker")
                + ")"
            )
            holder, info = stackutil.spawn_holder(
                sys.executable,
                ROOT,
                env,
                [
                    "--edge",
                    "--routers",
                    str(args.routers),
                    "--executors",
                    str(args.executors),
                    "--edge-workers",
                    str(args.edge_workers),
                ],
            )
            comps = {c["name"]: c for c in info["components"]}
            edge_url = comps["edge"]["endpoint"]
            gw_pid = holder.pid
            procs = {n: c["pid"] for n, c in comps.items()}
            if info["external_kafka"]:
                procs["kafka"] = procstat.pid_listening_on(
                    int(info["bootstrap"].split(",")[0].rsplit(":", 1)[1])
                )
            log(f"stack ready: edge {edge_url}, state {info['state_dir']}, processes {procs}")

        # a broker and services started a moment ago are slow (the broker's JIT): warm them up first
        if args.warmup > 0 and not args.edge_url:
            n = warm_up(edge_url, args.api_key, args.warmup)
            log(f"warm-up: {n} requests through the edge in {args.warmup:g} s")

        # 3. the peer-bench suite, with a whole-run CPU window over every stack process
        cmd = [str(run_sh), edge_url, mock_url, "--label", args.label, "--out", str(out_prefix)]
        if gw_pid:
            cmd += ["--gateway-pid", str(gw_pid)]
        if args.quick:
            cmd.append("--quick")
        for a in args.also:
            cmd += ["--also", a]
        cmd += passthrough
        env = os.environ | {"GATEWAY_API_KEY": args.api_key}
        stats0 = mock_stats(mock_url) or {}
        win = procstat.CpuWindow(procs).start()
        log("running " + " ".join(cmd))
        rc = subprocess.run(cmd, env=env).returncode
        cpu = win.stop()
        stats1 = mock_stats(mock_url) or {}

        # 4. the per-process split over the whole run
        split = {
            "note": "CPU seconds of each stack process over the whole peer-bench run (direct and gateway runs; "
            "the direct runs leave the gateway idle). peer-bench's own 'gateway CPU ms/req' is per "
            "measured window and covers the holder's process tree (every process below except an "
            "external broker).",
            "holder_pid": gw_pid,
            "stack": info,
            "processes": procs,
            "cpu": cpu,
            "mock_requests": {
                k: v - (stats0.get("requests") or {}).get(k, 0)
                for k, v in (stats1.get("requests") or {}).items()
            },
            "peer_bench_rc": rc,
        }
        out_prefix.with_name(out_prefix.name + "-stack.json").write_text(json.dumps(split, indent=1))
        total = {k: v for k, v in (cpu.get("cpu_s") or {}).items() if v is not None}
        print("\n## Stack processes over the whole run (CPU seconds)\n")
        print("| " + " | ".join(total) + " | wall s |")
        print("|" + "---:|" * (len(total) + 1))
        print("| " + " | ".join(f"{v:.2f}" for v in total.values()) + f" | {cpu['wall_s']:.0f} |")
        print(f"\nResults: {out_prefix}.md, {out_prefix}.json, {out_prefix.name}-stack.json")
        return rc
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if holder is not None:
            log("stopping the stack")
            with contextlib.suppress(Exception):
                if holder.stdin:
                    holder.stdin.close()
            try:
                holder.wait(timeout=40)
            except subprocess.TimeoutExpired:
                stop(holder)
        stop(mock)


if __name__ == "__main__":
    sys.exit(main())

"""Two variants of the gateway measured in one run, alternating: ``bench.http_bench`` and
``bench.kafka_bench`` run for arm A, then arm B, then B, then A, ... ``--alternations`` times,
against one broker kept warm for the whole run, and one markdown report of both arms (every
alternation, medians, spread).

    python -m bench.ab --arm before:dir=/tmp/wt-before --arm after:dir=/tmp/wt-after
    python -m bench.ab --arm logged:LLMGW_REQUEST_LOG=1 --arm quiet:LLMGW_REQUEST_LOG=0 --only http

An arm is ``NAME[:dir=CHECKOUT][:VAR=VALUE]...``: the benches run from that checkout (default
this one; a git worktree with ``.venv`` linked to this checkout's) with those environment
variables, which the services it starts inherit. The broker is ``KAFKA_BOOTSTRAP_SERVERS``,
else one this run starts (and stops) so its JVM is warm for every arm. Each bench starts and
stops its own stack. Figures per alternation:

* http_bench (peer-bench harness; wrk, stream_client): added p50 (``+p50``: gateway minus
  direct; TTFT for streams), the gateway's own p50 (``gw p50``) and CPU ms per request of the services (router, executor, edge, the
  sinks: their process trees in the measured window / requests the mock saw; the executor's
  alone too), and peer-bench's
  own figure for the whole stack tree (services + emulator + S3), for each point.
* kafka_bench (SDK -> router -> executor): added p50 and CPU ms per request of router +
  executor, and with the broker (its window CPU, so on the shared broker of this run).

The report goes to ``--out`` (default ``bench/reports/ab-LABEL-<timestamp>.md``); the benches'
own results stay in each checkout's ``bench/results/``.

``--interleave ROUNDS``: http_bench's points in short paired windows instead, both arms' stacks up
at once (``bench/paired.py``), reported as the median of each round's B/A ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.runtime.settings import ROOT

#: http_bench's default points for an A/B: no upstream latency, so the gateway's own cost shows.
HTTP_ARGS = "--latencies 0 --chunk-delays 0 --ns-conc 1,16 --st-conc 1 --warmup 10"
PEER_BENCH = Path(os.environ.get("PEER_BENCH_DIR", ROOT.parent / "shared" / "peer-bench"))
KAFKA_ARGS = "--only nonstream-c1|nonstream-c32|stream-c1 --rounds 1 --seconds 8 --warmup 10"
#: The stack's components that are gateway services (not the emulator, S3 or the broker).
SERVICES = re.compile(r"(router|executor|edge|usage-sink|audit-sink)\b")


def log(*a: object) -> None:
    print(time.strftime("%H:%M:%S"), "ab:", *a, file=sys.stderr, flush=True)


@dataclass
class Arm:
    name: str
    dir: Path = ROOT
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> Arm:
        name, *parts = spec.split(":")
        arm = cls(name)
        for part in parts:
            key, sep, value = part.partition("=")
            if not sep:
                raise SystemExit(f"--arm {spec!r}: {part!r} is not dir=PATH or VAR=VALUE")
            if key == "dir":
                arm.dir = Path(value).resolve()
            else:
                arm.env[key] = value
        if not (arm.dir / ".venv" / "bin" / "python").exists():
            raise SystemExit(f"--arm {spec!r}: no .venv/bin/python in {arm.dir}")
        return arm

    @property
    def python(self) -> str:
        return str(self.dir / ".venv" / "bin" / "python")


# --- one bench run ------------------------------------------------------------------------------


def run_http(arm: Arm, label: str, args: list[str], env: dict[str, str]) -> dict[str, dict[str, float]]:
    results = arm.dir / "bench" / "results"
    before = set(results.glob(f"http-{label}-*.json"))
    cmd = [arm.python, "-m", "bench.http_bench", "--label", label, *args]
    log(f"{arm.name}: {shlex.join(cmd)}")
    subprocess.run(cmd, cwd=arm.dir, env=env, stdout=subprocess.DEVNULL, check=True)
    (path,) = [p for p in results.glob(f"http-{label}-*.json") if p not in before and "stack" not in p.name]
    stack = json.loads(path.with_name(path.stem + "-stack.json").read_text())
    return http_figures(json.loads(path.read_text()), stack)


def http_figures(result: dict[str, Any], stack: dict[str, Any]) -> dict[str, dict[str, float]]:
    services = {pid for name, pid in stack["processes"].items() if SERVICES.match(name) and pid}
    executors = [pid for name, pid in stack["processes"].items() if name.startswith("executor") and pid]
    out: dict[str, dict[str, float]] = {}
    for p in result["points"]:
        d, g = p["direct"], p["gateway"]
        n = sum(v for k, v in (g.get("upstream_requests") or {}).items() if k in ("chat", "chat_stream"))
        n = n or g["completed"]
        lat = "ttft_ms" if p["kind"] == "stream" else "lat_ms"
        per_pid = g["gateway_proc"].get("cpu_s_per_pid") or {}
        out[f"http {p['kind']} c={p['conc']}"] = {
            "+p50 ms": g[lat]["p50"] - d[lat]["p50"],
            "gw p50 ms": g[lat]["p50"],
            "services CPU ms/req": 1000 * sum(v for pid, v in per_pid.items() if int(pid) in services) / n,
            "executor CPU ms/req": 1000 * sum(per_pid.get(str(pid), 0.0) for pid in executors) / n,
            "stack CPU ms/req": 1000 * g["gateway_proc"]["cpu_s"] / n,
        }
    return out


def run_kafka(arm: Arm, label: str, args: list[str], env: dict[str, str]) -> dict[str, dict[str, float]]:
    out_path = Path(tempfile.mkdtemp(prefix="ab-")) / f"kafka-{label}.json"
    cmd = [arm.python, "-m", "bench.kafka_bench", "--out", str(out_path), *args]
    log(f"{arm.name}: {shlex.join(cmd)}")
    subprocess.run(cmd, cwd=arm.dir, env=env, stdout=subprocess.DEVNULL, check=True)
    return kafka_figures(json.loads(out_path.read_text()))


def kafka_figures(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for p in result["points"]:
        per = p["gateway"].get("cpu_ms_per_req") or {}
        lat = "ttft_ms" if p["kind"] == "stream" else "lat_ms"
        added = p["added"].get(lat) or {}
        services = sum(v for k, v in per.items() if k.startswith(("router", "executor")))
        out[f"kafka {p['id']}"] = {
            "+p50 ms": added.get("p50"),
            "gw p50 ms": (p["gateway"].get(lat) or {}).get("p50"),
            "services CPU ms/req": services,
            "with broker CPU ms/req": services + (per.get("kafka") or 0.0),
        }
    return out


# --- the broker ---------------------------------------------------------------------------------


def start_broker() -> tuple[subprocess.Popen[bytes], str]:
    from services.cli import infra

    state = Path(tempfile.mkdtemp(prefix="ab-kafka-"))
    port, controller = infra.free_port(), infra.free_port()
    cmd, env = infra.kafka_command(state, port, controller)
    proc = subprocess.Popen(
        cmd,
        env=os.environ | env,
        stdout=open(state / "kafka.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    infra.wait_port("127.0.0.1", port, 120, proc, "kafka")
    log(f"broker pid {proc.pid} on 127.0.0.1:{port} (log {state / 'kafka.log'})")
    return proc, f"127.0.0.1:{port}"


# --- the report ---------------------------------------------------------------------------------


def fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def render(
    label: str,
    arms: list[Arm],
    runs: list[tuple[int, str, dict[str, dict[str, float]]]],
    meta: dict[str, Any],
) -> str:
    names = [a.name for a in arms]
    a, b = names
    points = sorted({pt for _, _, figs in runs for pt in figs}, key=lambda s: (not s.startswith("http"), s))
    L = [f"# A/B: {label}\n"]
    L += [f"- {k}: {v}" for k, v in meta.items()]
    L.append("")
    L.append(
        f"Alternations run {a} then {b}, then {b} then {a}, and so on (each arm's benches back to back). "
        f"Medians over the alternations, the spread (min-max) in brackets; `{b} - {a}` compares the "
        "medians.\n"
    )
    metrics = sorted({m for _, _, figs in runs for f in figs.values() for m in f})
    L.append("## Medians\n")
    L.append(f"| point | figure | {a} | {b} | {b} - {a} | change |")
    L.append("|---|---|---:|---:|---:|---:|")
    for pt in points:
        for m in metrics:
            vals = {
                n: [f[pt][m] for _, arm, f in runs if arm == n and pt in f and f[pt].get(m) is not None]
                for n in names
            }
            if not all(vals.values()):
                continue
            med = {n: statistics.median(v) for n, v in vals.items()}
            cells = [f"{fmt(med[n])} ({fmt(min(vals[n]))}-{fmt(max(vals[n]))})" for n in names]
            diff = med[b] - med[a]
            change = f"{100 * diff / med[a]:+.1f}%" if med[a] else "n/a"
            L.append(f"| {pt} | {m} | {cells[0]} | {cells[1]} | {diff:+.2f} | {change} |")
    L.append("\n## Every alternation\n")
    cols = [f"{i + 1} {arm}" for i, arm, _ in runs]
    L.append("| point | figure | " + " | ".join(cols) + " |")
    L.append("|---|---|" + "---:|" * len(cols))
    for pt in points:
        for m in metrics:
            cells = [figs.get(pt, {}).get(m) for _, _, figs in runs]
            if any(c is not None for c in cells):
                L.append(f"| {pt} | {m} | " + " | ".join(fmt(c) for c in cells) + " |")
    return "\n".join(L) + "\n"


def arms_line(arms: list[Arm]) -> str:
    """The report's description of the arms: name, checkout, environment."""
    return "; ".join(f"`{a.name}`: {a.dir}" + "".join(f" {k}={v}" for k, v in a.env.items()) for a in arms)


def broker_line(broker: subprocess.Popen[bytes] | None) -> str:
    return "KAFKA_BOOTSTRAP_SERVERS" if broker is None else "started by this run, shared by both arms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.ab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--arm", action="append", required=True, help="NAME[:dir=PATH][:VAR=VALUE]... (twice)")
    ap.add_argument("--alternations", type=int, default=6)
    ap.add_argument("--only", choices=["http", "kafka"], help="one of the two benches")
    ap.add_argument(
        "--http-args", default=HTTP_ARGS, help=f"passed to bench.http_bench (default: {HTTP_ARGS})"
    )
    ap.add_argument(
        "--kafka-args", default=KAFKA_ARGS, help=f"passed to bench.kafka_bench (default: {KAFKA_ARGS})"
    )
    ap.add_argument(
        "--interleave",
        type=int,
        metavar="ROUNDS",
        help="both arms' stacks at once, ROUNDS rounds of short paired windows (bench.paired: the HTTP points only)",
    )
    ap.add_argument("--window-s", type=float, default=8.0, help="with --interleave: seconds per window")
    ap.add_argument("--label", default="ab")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    arms = [Arm.parse(s) for s in args.arm]
    if len(arms) != 2:
        raise SystemExit("--arm twice: A and B")
    benches = [b for b in ("http", "kafka") if args.only in (None, b)]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or ROOT / "bench" / "reports" / f"ab-{args.label}-{stamp}.md"
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker, bootstrap = start_broker()
    if args.interleave:
        from bench import paired

        out = args.out or ROOT / "bench" / "reports" / f"ab-{args.label}-paired-{stamp}.md"
        meta = {"arms": arms_line(arms), "cores": os.cpu_count(), "broker": broker_line(broker)}
        try:
            text = paired.run(
                arms,
                rounds=args.interleave,
                seconds=args.window_s,
                bootstrap=bootstrap,
                peer_bench_dir=PEER_BENCH,
                label=args.label,
                out=out,
                meta=meta,
                broker_pid=broker.pid if broker is not None else None,
            )
        finally:
            if broker is not None:
                broker.terminate()
                broker.wait(30)
        print(text)
        log(f"report: {out}")
        return 0
    runs: list[tuple[int, str, dict[str, dict[str, float]]]] = []
    failed: list[str] = []
    started = time.strftime("%Y-%m-%d %H:%M:%S")

    def report() -> str:
        meta = {
            "run": f"{started} to {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} cores",
            "arms": arms_line(arms),
            "http_bench": f"`{args.http_args}`" if "http" in benches else "not run",
            "kafka_bench": f"`{args.kafka_args}`" if "kafka" in benches else "not run",
            "broker": broker_line(broker),
            "failed runs": ", ".join(failed) or "none",
        }
        text = render(args.label, arms, runs, meta)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)  # after every run: an interrupted A/B keeps what it measured
        return text

    try:
        for i in range(args.alternations):
            for arm in arms if i % 2 == 0 else arms[::-1]:
                env = os.environ | {"PEER_BENCH_DIR": str(PEER_BENCH)} | arm.env
                env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
                figs: dict[str, dict[str, float]] = {}
                tag = f"{args.label}-{arm.name}-{i + 1}"
                for bench, run, bench_args in (
                    ("http", run_http, args.http_args),
                    ("kafka", run_kafka, args.kafka_args),
                ):
                    if bench not in benches:
                        continue
                    try:
                        figs |= run(arm, tag, shlex.split(bench_args), env)
                    except (subprocess.CalledProcessError, ValueError, KeyError) as exc:
                        failed.append(f"{bench} {tag} ({type(exc).__name__}: {exc})")
                        log(f"{bench} {tag} failed: {exc}")
                runs.append((i, arm.name, figs))
                log(f"{tag}: " + json.dumps(figs))
                report()
    finally:
        if broker is not None:
            broker.terminate()
            try:
                broker.wait(30)
            except subprocess.TimeoutExpired:
                broker.kill()
    print(report())
    log(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

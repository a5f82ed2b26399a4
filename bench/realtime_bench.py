"""Added latency of the gateway's Realtime relay, per audio frame and per direction.

``python -m bench.realtime_bench [--frames N] [--sessions 1,20] [--rounds R] [--no-barrier]``

A probe provider (a Realtime WebSocket server in this process, one clock with every process on
the machine: ``time.monotonic_ns``) stamps what it receives and what it sends:

* client -> provider: each ``input_audio_buffer.append`` (20 ms of 24 kHz PCM16) carries its send
  time in ``event_id``; the probe records its arrival;
* provider -> client: for each append the probe answers at once with a
  ``response.output_audio.delta`` of the same size carrying its send time; the client records
  its arrival.

Frames are paced as real audio (one per 20 ms per session). The sessions of a run open together
and start streaming together once all of them are open (``--no-barrier``: each as soon as it is
open, as the runs before 2026-12-02 13:00 did, so a session's first frames met the other sessions'
opening: router admissions, the executor's provider connections, audit records); how long the
opens took is reported apart (``open_p50``, ``open_max``, ms to ``session.created``). The same run
is made against the probe directly and through the gateway (edge -> ``llm.realtime.in`` -> executor -> probe ->
``llm.realtime.out`` -> edge), on a throw-away stack (``bench.stackutil``); the added latency is
the gateway's percentile less the direct one, per direction, at each concurrency; with
``--rounds R``, the median over R such pairs. ``cpu_us_per_frame``: the CPU time each of the
stack's processes (broker, edge, executor, router) spent per frame relayed in a gateway run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from services.runtime.settings import ROOT

FRAME = bytes(960 * 2)  # 20 ms of 24 kHz mono PCM16
FRAME_B64 = base64.b64encode(FRAME).decode()
#: the stack's processes whose CPU per frame is reported (component names, before any ``-<n>``)
PROCESSES = ("kafka", "edge", "executor", "router")
ARRIVALS: dict[str, list[float]] = {}  # run label -> client->provider latencies (ms)
ERRORS: list[dict[str, Any]] = []  # server events other than the probe's deltas (gateway errors)


def log(msg: str) -> None:
    print(f"[realtime_bench] {msg}", file=sys.stderr, flush=True)


async def probe(ws: ServerConnection) -> None:
    label = "direct" if "label=direct" in (ws.request.path if ws.request else "") else "gateway"
    sink = ARRIVALS.setdefault(label, [])
    await ws.send(json.dumps({"event_id": "event_probe", "type": "session.created", "session": {}}))
    async for raw in ws:
        now = time.monotonic_ns()
        event = json.loads(raw)
        if event.get("type") != "input_audio_buffer.append":
            continue
        sink.append((now - int(event["event_id"].split("_")[1])) / 1e6)
        await ws.send(
            json.dumps(
                {
                    "event_id": f"event_{time.monotonic_ns()}",
                    "type": "response.output_audio.delta",
                    "delta": event["audio"],
                }
            )
        )


async def session(
    url: str,
    headers: dict[str, str],
    frames: int,
    back: list[float],
    opens: list[float],
    barrier: asyncio.Barrier | None,
) -> None:
    began = time.monotonic()
    async with connect(url, additional_headers=headers, max_size=16 * 1024 * 1024) as ws:
        first = json.loads(await ws.recv())
        assert first["type"] == "session.created", first
        opens.append((time.monotonic() - began) * 1000)
        if barrier is not None:
            await barrier.wait()  # every session of the run is open: stream together

        async def reader() -> None:
            for _ in range(frames):
                event = json.loads(await ws.recv())
                if event["type"] != "response.output_audio.delta":  # the gateway's error: the run failed
                    ERRORS.append(event)
                    return
                back.append((time.monotonic_ns() - int(event["event_id"].split("_")[1])) / 1e6)

        reading = asyncio.create_task(reader())
        start = time.monotonic()
        for i in range(frames):
            delay = start + i * 0.02 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # real-time pacing of audio, not synchronisation
            event = {
                "event_id": f"evt_{time.monotonic_ns()}",
                "type": "input_audio_buffer.append",
                "audio": FRAME_B64,
            }
            await ws.send(json.dumps(event))
        await asyncio.wait_for(reading, 60)


def cpu_s(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) each named process has used so far (Linux ``/proc``)."""
    out = {}
    for name, pid in pids.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] if s else float("nan")


async def run(
    label: str, url: str, headers: dict[str, str], sessions: int, frames: int, barrier: bool = True
) -> dict[str, Any]:
    ARRIVALS[label] = []
    ERRORS.clear()
    back: list[float] = []
    opens: list[float] = []
    together = asyncio.Barrier(sessions) if barrier else None
    await asyncio.gather(*(session(url, headers, frames, back, opens, together) for _ in range(sessions)))
    up = ARRIVALS[label]
    return {
        "open_p50": pct(opens, 50),
        "open_max": max(opens),
        "up_p50": pct(up, 50),
        "up_p99": pct(up, 99),
        "down_p50": pct(back, 50),
        "down_p99": pct(back, 99),
        "frames_up": len(up),
        "frames_down": len(back),
        "errors": len(ERRORS),
        **({"first_error": ERRORS[0].get("error", {}).get("code")} if ERRORS else {}),
    }


def bench_config(state: Path, probe_port: int) -> Path:
    """config/demo.yaml plus the probe as a provider and alias ``bench-realtime``."""
    text = (ROOT / "config" / "demo.yaml").read_text()
    text = text.replace(
        "providers:\n",
        f"providers:\n  bench-probe:\n    kind: openai\n    base_url: http://127.0.0.1:{probe_port}/v1\n",
        1,
    )
    text = text.replace(
        "models:\n",
        "models:\n  bench-realtime:\n    capabilities: [realtime]\n    deployments:\n"
        "      - provider: bench-probe\n        model: probe\n",
        1,
    )
    path = state / "realtime-bench.yaml"
    path.write_text(text)
    return path


async def one_round(
    args: argparse.Namespace, n: int, direct: str, gateway: str, auth: dict[str, str], pids: dict[str, int]
) -> dict[str, Any]:
    d = await run("direct", direct, {}, n, args.frames, args.barrier)
    before = cpu_s(pids)
    g = await run("gateway", gateway, auth, n, args.frames, args.barrier)
    after = cpu_s(pids)
    frames = g["frames_up"] + g["frames_down"]
    # what relaying a frame costs each process (sessions' opens included): steadier than a
    # percentile on a shared machine, where the other load moves the tail
    g["cpu_us_per_frame"] = {
        k: round((after[k] - before[k]) / frames * 1e6, 1) for k in after if k in before and frames
    }
    return {
        "direct": d,
        "gateway": g,
        "added": {k: round(g[k] - d[k], 3) for k in ("up_p50", "up_p99", "down_p50", "down_p99")},
    }


async def measure(
    args: argparse.Namespace, edge_url: str, probe_port: int, pids: dict[str, int]
) -> dict[str, Any]:
    direct = f"ws://127.0.0.1:{probe_port}/v1/realtime?model=probe&label=direct"
    gateway = f"{edge_url.replace('http', 'ws', 1)}/v1/realtime?model=bench-realtime"
    auth = {"Authorization": "Bearer sk-llmgw-demo"}
    await run("gateway", gateway, auth, 1, 50)  # warm-up: connections, partitions, code paths
    results: dict[str, Any] = {}
    for n in args.sessions:
        rounds = [await one_round(args, n, direct, gateway, auth, pids) for _ in range(args.rounds)]
        # each figure the median over the rounds: the other load of a shared machine comes and goes
        added = {k: round(statistics.median(r["added"][k] for r in rounds), 3) for k in rounds[0]["added"]}
        results[str(n)] = (
            rounds[0] | {"added": added} if len(rounds) == 1 else {"added": added, "rounds": rounds}
        )
        log(f"{n} sessions: {added}")
    return results


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from services.cli import infra
    from services.cli.stack import Stack

    from .stackutil import new_settings

    probe_port = infra.free_port()
    server = await serve(probe, "127.0.0.1", probe_port, max_size=16 * 1024 * 1024)
    settings = new_settings()
    settings = dataclasses.replace(settings, config_path=bench_config(settings.state_dir, probe_port))
    stack = Stack(settings)
    log(f"starting the stack in {settings.state_dir}")
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, lambda: stack.up(routers=1, executors=1, edge=True))
    try:
        edge = f"http://{settings.edge_host}:{settings.edge_port}"
        pids = {c.name: c.pid for c in stack.load() if c.pid and c.name.split("-")[0] in PROCESSES}
        return await measure(args, edge, probe_port, pids)
    finally:
        await loop.run_in_executor(None, stack.down)
        server.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.realtime_bench")
    ap.add_argument("--frames", type=int, default=500, help="audio frames per session (20 ms each)")
    ap.add_argument("--sessions", type=lambda s: [int(x) for x in s.split(",")], default=[1, 20])
    ap.add_argument("--rounds", type=int, default=1, help="runs per concurrency; figures are their medians")
    ap.add_argument(
        "--no-barrier",
        dest="barrier",
        action="store_false",
        help="each session streams as soon as it is open (the method of the runs before 2026-12-02 13:00)",
    )
    args = ap.parse_args(argv)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    res = asyncio.run(main_async(args))
    print(
        json.dumps(
            {
                "loadavg_before": load,
                "loadavg_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                "frames": args.frames,
                "barrier": args.barrier,
                "results": res,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Media benchmarks, in one run on a throw-away stack with the edge (README "Media").

    python -m bench.media_bench              # ~3-4 min
    python -m bench.media_bench --quick      # smoke run, well under a minute after start-up
    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python -m bench.media_bench   # on a running broker

(a) **Vision by reference vs inline.** Chat requests to ``demo-openai`` through the edge, three
modes: *text* (no media: edge -> router -> executor), *ref* (a ~1 MiB PNG of random pixels
uploaded once with ``POST /v1/files`` and named by its file id: the media-store reads it from S3
and the executor reads it again from S3, the claim check) and *inline* (the same PNG as a data
URL in the body, ~1.4 MB of base64 in the request event, above the 256 KiB inline limit: the
media-store decodes and stores it, the executor reads it back from S3). Phases alternate
(``--rounds`` rounds of ``--requests`` requests per mode at concurrency 1, the mode order rotating,
then ``--c8-seconds`` per mode at concurrency 8); p50/p90/p99 of each mode and what each media
mode adds over text at the same percentile. Every media answer is checked to name the PNG's
exact size (the emulator reports what it was sent).

(b) **Media-store throughput.** Requests/s of chat requests carrying a 10 KB data-URL PNG at
concurrency 16 and 32 (``--tput-conc``), alternating with text-only requests at the same
concurrency (the same pipeline without the media-store hop), and the CPU seconds each gateway
process spent per request (``/proc/PID/stat``; the media-store's is the point).

(c) **Memory while uploading.** ``--uploads`` clients (16) each upload ``--upload-mib`` (20 MiB)
to ``POST /v1/files`` at once; the multipart body is streamed from an async generator (one
20 MiB buffer in this process, shared, sliced per chunk). The edge's RSS (VmRSS of its process
tree) is sampled every 50 ms: baseline (median of the second before), peak, peak - baseline,
against uploads x size (what an edge buffering whole bodies would hold), and per upload against
the S3 part size (8 MiB): the edge streams each upload to S3 as a multipart upload, so what it
holds per upload should be a few parts at most, whatever the file's size. The S3 server's
(moto's, in memory) RSS is sampled too, for scale. Each upload's size is checked with
``GET /v1/files/{id}``, then the files are deleted.

Output: the tables on stdout, ``bench/results/media-<ts>.json`` and ``bench/reports/media-<ts>.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import procstat
from bench.kafka_bench import closed_loop, log, summary

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPORTS = HERE / "reports"
ALIAS = "demo-openai"
DEMO_KEY = "sk-llmgw-demo"
AUTH = {"authorization": f"Bearer {DEMO_KEY}"}
PROMPT = "what is in this image?"
MiB = 1024 * 1024
MODES = ("text", "ref", "inline")
Req = Callable[[int], Awaitable[dict[str, Any]]]


# ------------------------------------------------------------------ media


def noise_png(target_bytes: int) -> bytes:
    """A PNG of random pixels (incompressible, stored uncompressed) of about ``target_bytes``."""
    from PIL import Image

    side = int((target_bytes / 3) ** 0.5) + 1
    img = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def data_url(mime: str, body: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(body).decode()}"


def chat_body(image_url: str | None) -> bytes:
    parts: list[dict[str, Any]] = [{"type": "text", "text": PROMPT}]
    if image_url is not None:
        parts.append({"type": "image_url", "image_url": {"url": image_url, "detail": "high"}})
    return orjson.dumps({"model": ALIAS, "messages": [{"role": "user", "content": parts}], "max_tokens": 20})


# ------------------------------------------------------------------ stack


def start() -> tuple[Any, Any]:
    from services.cli.stack import Stack

    from .stackutil import new_settings

    # the safe fetcher may reach a loopback origin (config/demo.yaml media.fetch.allow_hosts);
    # this run sends none, but a stack started for media benchmarks is set up as the e2e one
    os.environ.setdefault("LLMGW_MEDIA_ALLOW_HOST", "127.0.0.1")
    settings = new_settings()
    stack = Stack(settings)
    log(f"starting the stack in {settings.state_dir} (topic prefix {settings.topic_prefix}, edge)")
    t0 = time.monotonic()
    stack.up(routers=1, executors=1, edge=True)
    log(f"stack ready in {time.monotonic() - t0:.1f}s")
    return stack, settings


def component_pids(stack: Any) -> dict[str, int]:
    pids = {c.name: c.pid for c in stack.load() if c.pid}
    if "kafka" not in pids and stack.settings.external_kafka:
        port = int(stack.settings.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])
        if (pid := procstat.pid_listening_on(port)) is not None:
            pids["kafka"] = pid
    return pids


def rss_bytes(pids: list[int]) -> int:
    """VmRSS of these processes, summed (0 for one that is gone)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def hwm_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class RssSampler:
    """VmRSS of named process trees every ``interval`` s, on a thread (the load generator's event
    loop is busy sending): ``mark(label)`` notes a moment, ``stop()`` returns the samples."""

    def __init__(self, roots: dict[str, int], interval: float = 0.05):
        pm = procstat.ppid_map()
        self.trees = {name: procstat.tree(pid, pm) for name, pid in roots.items()}
        self.interval = interval
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.marks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            self.samples.append((t, {n: rss_bytes(p) for n, p in self.trees.items()}))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def mark(self, label: str) -> None:
        self.marks[label] = time.monotonic()

    def stop(self) -> list[tuple[float, dict[str, int]]]:
        self._stop.set()
        self._thread.join()
        return self.samples

    def between(self, name: str, t0: float, t1: float) -> list[int]:
        return [s[name] for t, s in self.samples if t0 <= t <= t1]


# ------------------------------------------------------------------ requests


def chat(session: aiohttp.ClientSession, edge_url: str, body: bytes, expect: bytes | None) -> Req:
    """One chat request per call; with ``expect``, the answer must contain it (the emulator
    names the media it was sent: ``image/png <size> bytes``)."""
    url = f"{edge_url}/v1/chat/completions"
    headers = {"content-type": "application/json", **AUTH}

    async def one(i: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        async with session.post(url, data=body, headers=headers) as r:
            raw = await r.read()
            if r.status != 200:
                raise RuntimeError(f"chat: HTTP {r.status}: {raw[:300]!r}")
            overhead = float(r.headers.get("x-llmgw-overhead-ms", "nan"))
        lat = (time.perf_counter() - t0) * 1000
        if expect is not None and expect not in raw:
            raise RuntimeError(f"chat: the answer does not name {expect!r}: {raw[:300]!r}")
        return {"lat": lat, "overhead": overhead}

    return one


def multipart(
    data: memoryview, filename: str, mime: str, purpose: str, chunk: int
) -> tuple[str, int, Callable[[], AsyncIterator[bytes]]]:
    """A ``multipart/form-data`` upload (``purpose``, then ``file``, as the OpenAI SDKs send
    them): its content type, its length, and a generator of its bytes in ``chunk``-sized pieces
    sliced from ``data`` (the client never holds a second copy of the file)."""
    boundary = f"----mediabench{uuid.uuid4().hex}"
    head = (
        f'--{boundary}\r\ncontent-disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
        f'--{boundary}\r\ncontent-disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"content-type: {mime}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    async def gen() -> AsyncIterator[bytes]:
        yield head
        for off in range(0, len(data), chunk):
            yield bytes(data[off : off + chunk])
        yield tail

    return f"multipart/form-data; boundary={boundary}", len(head) + len(data) + len(tail), gen


async def upload(
    session: aiohttp.ClientSession,
    edge_url: str,
    data: bytes | memoryview,
    filename: str,
    mime: str,
    purpose: str = "user_data",
    chunk: int = 256 * 1024,
) -> dict[str, Any]:
    ctype, length, gen = multipart(memoryview(data), filename, mime, purpose, chunk)
    headers = {"content-type": ctype, "content-length": str(length), **AUTH}
    t0 = time.perf_counter()
    async with session.post(f"{edge_url}/v1/files", data=gen(), headers=headers) as r:
        raw = await r.read()
        if r.status != 200:
            raise RuntimeError(f"upload: HTTP {r.status}: {raw[:300]!r}")
    obj = orjson.loads(raw)
    return {"id": obj["id"], "bytes": obj["bytes"], "s": time.perf_counter() - t0}


async def file_object(session: aiohttp.ClientSession, edge_url: str, file_id: str) -> dict[str, Any]:
    async with session.get(f"{edge_url}/v1/files/{file_id}", headers=AUTH) as r:
        raw = await r.read()
        if r.status != 200:
            raise RuntimeError(f"GET /v1/files/{file_id}: HTTP {r.status}: {raw[:300]!r}")
    return orjson.loads(raw)  # type: ignore[no-any-return]


async def delete_file(session: aiohttp.ClientSession, edge_url: str, file_id: str) -> bool:
    async with session.delete(f"{edge_url}/v1/files/{file_id}", headers=AUTH) as r:
        await r.read()
        return r.status == 200


# ------------------------------------------------------------------ phases


async def phase(fn: Req, conc: int, seconds: float, cap: int) -> dict[str, Any]:
    run = await closed_loop(fn, conc, seconds, cap, hard_s=60)
    samples = run["samples"]
    return {
        "conc": conc,
        "ok": len(samples),
        "errors": run["errors"],
        "elapsed_s": round(run["elapsed_s"], 3),
        "_lat": [s["lat"] for s in samples],
        "_overhead": [s["overhead"] for s in samples if s["overhead"] == s["overhead"]],
    }


def merged(phases: list[dict[str, Any]]) -> dict[str, Any]:
    lat = [v for p in phases for v in p["_lat"]]
    elapsed = sum(p["elapsed_s"] for p in phases)
    errors: dict[str, int] = {}
    for p in phases:
        for k, v in p["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return {
        "ok": len(lat),
        "errors": errors,
        "phases": len(phases),
        "elapsed_s": round(elapsed, 3),
        "rps": round(len(lat) / elapsed, 1) if elapsed else None,
        "lat_ms": summary(lat),
        "overhead_ms": summary([v for p in phases for v in p["_overhead"]]),
    }


def added(res: dict[str, Any], mode: str) -> dict[str, float | None]:
    """``mode``'s latency minus text-only's, per percentile."""
    m, t = res[mode]["lat_ms"], res["text"]["lat_ms"]
    return {
        q: round(m[q] - t[q], 3) if m[q] is not None and t[q] is not None else None
        for q in ("p50", "p90", "p99")
    }


async def vision(args: argparse.Namespace, session: aiohttp.ClientSession, edge_url: str) -> dict[str, Any]:
    png = noise_png(args.image_kib * 1024)
    created = await upload(session, edge_url, png, "noise.png", "image/png", purpose="vision")
    log(f"(a) {len(png)}-byte PNG uploaded as {created['id']} in {created['s'] * 1000:.0f} ms")
    expect = f"image/png {len(png)} bytes".encode()
    fns = {
        "text": chat(session, edge_url, chat_body(None), None),
        "ref": chat(session, edge_url, chat_body(created["id"]), expect),
        "inline": chat(session, edge_url, chat_body(data_url("image/png", png)), expect),
    }
    body_bytes = {"text": len(chat_body(None)), "inline": len(chat_body(data_url("image/png", png)))}
    body_bytes["ref"] = len(chat_body(created["id"]))
    for mode in MODES:  # unmeasured: every path warm, and every mode answers as expected
        w = await phase(fns[mode], 2, args.warmup / 3, 10**9)
        log(f"(a) warm-up {mode}: {w['ok']} requests, errors {w['errors'] or 'none'}")
    out: dict[str, Any] = {"image_bytes": len(png), "body_bytes": body_bytes, "file_id": created["id"]}
    c1: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for rnd in range(args.rounds):
        order = MODES[rnd % 3 :] + MODES[: rnd % 3]
        for mode in order:
            p = await phase(fns[mode], 1, args.c1_max_s, args.requests)
            c1[mode].append(p)
            lat = summary(p["_lat"])
            log(f"(a) c=1 round {rnd + 1} {mode}: {p['ok']} requests, p50 {lat['p50']} ms")
    c8: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for rnd in range(args.c8_rounds):
        order = MODES if rnd % 2 == 0 else MODES[::-1]
        for mode in order:
            p = await phase(fns[mode], 8, args.c8_seconds, 10**9)
            c8[mode].append(p)
            log(f"(a) c=8 round {rnd + 1} {mode}: {p['ok']} requests, p50 {summary(p['_lat'])['p50']} ms")
    for conc, runs in ((1, c1), (8, c8)):
        res = {m: merged(v) for m, v in runs.items()}
        res["added_ms"] = {m: added(res, m) for m in ("ref", "inline")}
        out[f"c{conc}"] = res
    return out


async def throughput(
    args: argparse.Namespace, session: aiohttp.ClientSession, edge_url: str, pids: dict[str, int]
) -> dict[str, Any]:
    png = noise_png(args.small_kib * 1024)
    fns = {
        "media": chat(
            session,
            edge_url,
            chat_body(data_url("image/png", png)),
            f"image/png {len(png)} bytes".encode(),
        ),
        "text": chat(session, edge_url, chat_body(None), None),
    }
    roots = {
        n: p for n, p in pids.items() if n in ("media-store", "router-0", "executor-0", "edge", "s3", "kafka")
    }
    w = await phase(fns["media"], 16, args.warmup / 2, 10**9)
    log(f"(b) warm-up: {w['ok']} requests with a {len(png)}-byte PNG, errors {w['errors'] or 'none'}")
    out: dict[str, Any] = {"image_bytes": len(png)}
    for conc in args.tput_conc:
        runs: dict[str, list[dict[str, Any]]] = {"media": [], "text": []}
        cpu: dict[str, dict[str, float]] = {"media": {}, "text": {}}
        busy: dict[str, list[float]] = {"media": [], "text": []}
        for rnd in range(args.tput_rounds):
            for mode in ("media", "text") if rnd % 2 == 0 else ("text", "media"):
                win = procstat.CpuWindow(dict(roots)).start()
                p = await phase(fns[mode], conc, args.tput_seconds, 10**9)
                await asyncio.sleep(args.settle)  # the services' tail (usage, audit) lands in the window
                stat = win.stop()
                for name, v in (stat["cpu_s"] or {}).items():
                    cpu[mode][name] = cpu[mode].get(name, 0.0) + (v or 0.0)
                if stat["machine_busy_pct"] is not None:
                    busy[mode].append(stat["machine_busy_pct"])
                runs[mode].append(p)
                log(
                    f"(b) c={conc} round {rnd + 1} {mode}: {p['ok'] / p['elapsed_s']:.0f} req/s, "
                    f"media-store {1000 * (stat['cpu_s'] or {}).get('media-store', 0) / max(p['ok'], 1):.2f}"
                    f" ms CPU/req"
                )
        point: dict[str, Any] = {}
        for mode in ("media", "text"):
            m = merged(runs[mode])
            m["cpu_s"] = {k: round(v, 4) for k, v in cpu[mode].items()}
            m["cpu_ms_per_req"] = {
                k: round(1000 * v / m["ok"], 3) if m["ok"] else None for k, v in cpu[mode].items()
            }
            m["machine_busy_pct"] = round(statistics.mean(busy[mode]), 1) if busy[mode] else None
            point[mode] = m
        out[f"c{conc}"] = point
    return out


async def uploads(
    args: argparse.Namespace, session: aiohttp.ClientSession, edge_url: str, pids: dict[str, int]
) -> dict[str, Any]:
    size = int(args.upload_mib * MiB)
    data = memoryview(os.urandom(size))
    roots = {n: pids[n] for n in ("edge", "s3") if n in pids}
    sampler = RssSampler(roots, args.rss_interval).start()
    hwm0 = hwm_bytes(pids["edge"])
    await asyncio.sleep(1.0)  # the baseline: a second of samples with nothing in flight
    sampler.mark("start")
    log(f"(c) {args.uploads} uploads of {size} bytes at once")

    async def one(i: int) -> dict[str, Any]:
        return await upload(session, edge_url, data, f"blob-{i}.bin", "application/octet-stream")

    got = await asyncio.gather(*(one(i) for i in range(args.uploads)), return_exceptions=True)
    sampler.mark("end")
    await asyncio.sleep(1.0)  # a second after: what the edge keeps
    samples = sampler.stop()
    t0, t1 = sampler.marks["start"], sampler.marks["end"]
    ok = [g for g in got if isinstance(g, dict)]
    errors = [f"{type(g).__name__}: {str(g)[:200]}" for g in got if isinstance(g, BaseException)]
    for e in errors[:3]:
        log(f"(c) upload failed: {e}")
    verified = 0
    sizes: list[int] = []
    for g in ok:
        obj = await file_object(session, edge_url, g["id"])
        sizes.append(obj["bytes"])
        verified += obj["bytes"] == size and g["bytes"] == size
    deleted = sum([await delete_file(session, edge_url, g["id"]) for g in ok])

    def rss(name: str) -> dict[str, Any]:
        before = sampler.between(name, t0 - 1.0, t0)
        during = sampler.between(name, t0, t1 + 0.25)
        after = sampler.between(name, t1 + 0.5, t1 + 1.0)
        base = int(statistics.median(before)) if before else None
        peak = max(during) if during else None
        return {
            "baseline": base,
            "peak": peak,
            "peak_minus_baseline": peak - base if peak is not None and base is not None else None,
            "after": int(statistics.median(after)) if after else None,
        }

    wall = t1 - t0
    return {
        "uploads": args.uploads,
        "bytes_each": size,
        "total_bytes": size * args.uploads,
        "ok": len(ok),
        "errors": errors,
        "verified_sizes": verified,
        "sizes": sizes,
        "deleted": deleted,
        "wall_s": round(wall, 3),
        "upload_s": summary([g["s"] for g in ok]),
        "mib_per_s": round(size * len(ok) / MiB / wall, 1) if wall else None,
        "samples": len(samples),
        # (seconds from the uploads' start, MiB of each tree): the shape of the peak
        "series": [[round(t - t0, 3), *(round(r[n] / MiB, 1) for n in roots)] for t, r in samples],
        "series_columns": ["t_s", *roots],
        "interval_s": args.rss_interval,
        "rss": {name: rss(name) for name in roots},
        "edge_hwm_before": hwm0,
        "edge_hwm_after": hwm_bytes(pids["edge"]),
        "part_size": _part_size(),
    }


def _part_size() -> int:
    from services.runtime.media.storage import DEFAULT_PART_SIZE

    return DEFAULT_PART_SIZE


# ------------------------------------------------------------------ the run


async def measure(args: argparse.Namespace, stack: Any, settings: Any) -> dict[str, Any]:
    edge_url = f"http://{settings.edge_host}:{settings.edge_port}"
    pids = component_pids(stack)
    conn = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        res: dict[str, Any] = {"pids": pids}
        res["vision"] = await vision(args, session, edge_url)
        res["throughput"] = await throughput(args, session, edge_url, pids)
        res["uploads"] = await uploads(args, session, edge_url, pids)
    return res


def fmt(v: Any, nd: int = 2) -> str:
    return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def mib(v: int | None) -> str:
    return "-" if v is None else f"{v / MiB:.1f}"


def render(res: dict[str, Any], args: argparse.Namespace, meta: dict[str, Any]) -> str:
    v = res["vision"]
    lines = [
        f"# Media benchmark {meta['started']}",
        "",
        f"commit {meta['commit']}, {'quick' if args.quick else 'full'} run; machine speed probe "
        f"{meta['probe_ms']} ms before / {meta.get('probe_ms_after', '-')} ms after (lower = faster), "
        f"load average at start {meta['loadavg']}; broker "
        f"{'external' if meta['external_kafka'] else 'own'}; one router, one executor, one edge worker.",
        "",
        f"## (a) Vision through the edge ({ALIAS}): by file id vs inline data URL vs text only",
        "",
        f"PNG of random pixels, {v['image_bytes']} bytes; request bodies: text {v['body_bytes']['text']} B, "
        f"ref {v['body_bytes']['ref']} B, inline {v['body_bytes']['inline']} B. "
        f"c=1: {args.rounds} rounds x {args.requests} requests per mode, order rotating; "
        f"c=8: {args.c8_rounds} rounds x {args.c8_seconds:g} s per mode. "
        "+pXX = the mode minus text only at that percentile; overhead = `x-llmgw-overhead-ms` p50 "
        "(the gateway's time without the provider).",
        "",
        "| c | mode | requests | p50 ms | p90 ms | p99 ms | +p50 | +p90 | +p99 | req/s | overhead p50 | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for conc in (1, 8):
        r = v[f"c{conc}"]
        for mode in MODES:
            m, lat = r[mode], r[mode]["lat_ms"]
            add = r["added_ms"].get(mode, {})
            lines.append(
                f"| {conc} | {mode} | {m['ok']} | {fmt(lat['p50'])} | {fmt(lat['p90'])} | {fmt(lat['p99'])} | "
                f"{fmt(add.get('p50'))} | {fmt(add.get('p90'))} | {fmt(add.get('p99'))} | {fmt(m['rps'], 1)} | "
                f"{fmt(m['overhead_ms']['p50'])} | {m['errors'] or 'none'} |"
            )
    t = res["throughput"]
    procs = ("media-store", "router-0", "executor-0", "edge", "s3", "kafka")
    lines += [
        "",
        f"## (b) Throughput with a media-store hop: {t['image_bytes']}-byte data-URL PNG vs text only",
        "",
        f"{args.tput_rounds} rounds x {args.tput_seconds:g} s per mode and concurrency, modes alternating. "
        "CPU = utime+stime of each process tree in the phase, per completed request.",
        "",
        "| c | mode | requests | req/s | p50 ms | p99 ms | "
        + " | ".join(f"{p} CPU ms/req" for p in procs)
        + " | machine busy % | errors |",
        "|---:|---|---:|---:|---:|---:|" + "---:|" * len(procs) + "---:|---|",
    ]
    for conc in args.tput_conc:
        for mode in ("media", "text"):
            m = t[f"c{conc}"][mode]
            cpu = m["cpu_ms_per_req"]
            lines.append(
                f"| {conc} | {mode} | {m['ok']} | {fmt(m['rps'], 1)} | {fmt(m['lat_ms']['p50'])} | "
                f"{fmt(m['lat_ms']['p99'])} | "
                + " | ".join(fmt(cpu.get(p), 3) for p in procs)
                + f" | {fmt(m['machine_busy_pct'], 1)} | {m['errors'] or 'none'} |"
            )
    for conc in args.tput_conc:
        p = t[f"c{conc}"]
        if p["media"]["rps"] and p["text"]["rps"]:
            lines.append(
                f"\nc={conc}: media {p['media']['rps']} req/s = "
                f"{100 * p['media']['rps'] / p['text']['rps']:.0f}% of text-only's {p['text']['rps']} req/s."
            )
    u = res["uploads"]
    e = u["rss"]["edge"]
    naive = u["total_bytes"]
    per = e["peak_minus_baseline"] // u["uploads"] if e["peak_minus_baseline"] is not None else None
    lines += [
        "",
        f"## (c) Edge memory while {u['uploads']} clients upload {mib(u['bytes_each'])} MiB each to `POST /v1/files`",
        "",
        f"RSS of the edge's process tree every {u['interval_s'] * 1000:g} ms ({u['samples']} samples); "
        f"baseline = median of the second before the uploads. S3 part size {mib(u['part_size'])} MiB.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| uploads ok / verified size (GET /v1/files/{{id}}) / deleted | {u['ok']} / {u['verified_sizes']} / "
        f"{u['deleted']} of {u['uploads']} |",
        f"| wall time of all uploads | {fmt(u['wall_s'])} s ({fmt(u['mib_per_s'], 1)} MiB/s through the edge) |",
        f"| one upload p50 / max | {fmt(u['upload_s']['p50'])} / {fmt(u['upload_s']['max'])} s |",
        f"| edge RSS baseline | {mib(e['baseline'])} MiB |",
        f"| edge RSS peak | {mib(e['peak'])} MiB |",
        f"| **edge peak - baseline** | **{mib(e['peak_minus_baseline'])} MiB** |",
        f"| uploads x size (an edge holding whole bodies) | {mib(naive)} MiB |",
        f"| peak - baseline / (uploads x size) | "
        f"{fmt(100 * e['peak_minus_baseline'] / naive if e['peak_minus_baseline'] is not None else None, 1)} % |",
        f"| peak - baseline per upload | {mib(per)} MiB = {fmt(per / u['part_size'] if per is not None else None)}"
        " S3 parts |",
        f"| edge RSS a second after | {mib(e['after'])} MiB |",
        f"| edge VmHWM before / after (process lifetime peak) | {mib(u['edge_hwm_before'])} / {mib(u['edge_hwm_after'])} MiB |",
    ]
    if "s3" in u["rss"]:
        s = u["rss"]["s3"]
        lines.append(
            f"| S3 (moto, in memory) RSS baseline / peak / after | {mib(s['baseline'])} / {mib(s['peak'])} / "
            f"{mib(s['after'])} MiB |"
        )
    if u["errors"]:
        lines += ["", "Upload errors: " + "; ".join(u["errors"][:5])]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.media_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: short phases, one round")
    ap.add_argument(
        "--requests", type=int, default=None, help="(a) requests per mode per round at c=1 (60; quick 8)"
    )
    ap.add_argument("--rounds", type=int, default=None, help="(a) rounds at c=1 (3; quick 1)")
    ap.add_argument("--c1-max-s", type=float, default=60.0, help="(a) longest one c=1 phase may run")
    ap.add_argument("--c8-seconds", type=float, default=None, help="(a) seconds per mode at c=8 (4; quick 1)")
    ap.add_argument("--c8-rounds", type=int, default=None, help="(a) rounds at c=8 (2; quick 1)")
    ap.add_argument("--image-kib", type=int, default=1024, help="(a) size of the PNG, KiB")
    ap.add_argument("--small-kib", type=int, default=10, help="(b) size of the PNG, KiB")
    ap.add_argument("--tput-conc", type=int, nargs="+", default=[16, 32], help="(b) concurrencies")
    ap.add_argument("--tput-seconds", type=float, default=None, help="(b) seconds per phase (6; quick 1.5)")
    ap.add_argument(
        "--tput-rounds", type=int, default=None, help="(b) media/text pairs per concurrency (2; quick 1)"
    )
    ap.add_argument("--uploads", type=int, default=16, help="(c) concurrent uploads")
    ap.add_argument("--upload-mib", type=float, default=20.0, help="(c) size of each upload, MiB")
    ap.add_argument("--rss-interval", type=float, default=0.05, help="(c) RSS sampling period, s")
    ap.add_argument("--warmup", type=float, default=None, help="unmeasured seconds first (9; quick 3)")
    ap.add_argument(
        "--settle", type=float, default=0.3, help="(b) seconds after a phase inside its CPU window"
    )
    ap.add_argument(
        "--out", type=Path, default=None, help="JSON results (default bench/results/media-<ts>.json)"
    )
    args = ap.parse_args(argv)
    for name, full, quick in (
        ("requests", 60, 8),
        ("rounds", 3, 1),
        ("c8_seconds", 4.0, 1.0),
        ("c8_rounds", 2, 1),
        ("tput_seconds", 6.0, 1.5),
        ("tput_rounds", 2, 1),
        ("warmup", 9.0, 3.0),
    ):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ts = time.strftime("%Y%m%d-%H%M%S")
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": _commit(),
        "probe_ms": procstat.calibrate(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    t_start = time.monotonic()
    stack, settings = start()
    meta["external_kafka"] = settings.external_kafka
    try:
        try:
            import uvloop

            runner: Any = uvloop.run
        except ImportError:
            runner = asyncio.run
        res = runner(measure(args, stack, settings))
    finally:
        log("stopping the stack")
        stack.down()
        if settings.external_kafka:
            from .stackutil import delete_topics

            try:
                delete_topics(settings.bootstrap_servers, settings.topic_prefix)
            except Exception as exc:  # noqa: BLE001 - best effort
                log(f"could not delete topics {settings.topic_prefix}*: {exc}")
    meta["probe_ms_after"] = procstat.calibrate()
    meta["wall_s"] = round(time.monotonic() - t_start, 1)
    report = render(res, args, meta)
    print(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    REPORTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"media-{ts}.json"
    md = REPORTS / f"media-{ts}.md"
    out.write_text(
        json.dumps(
            {
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "meta": meta,
                "results": res,
                "report": report,
            },
            indent=1,
        )
    )
    md.write_text(report + "\n")
    print(f"\nResults: {out}\nReport: {md}\n(total {meta['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``llmgw``: run the stack, one service, topics, schemas, and chat from the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import runpy
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from services.runtime.config import ConfigError, load_config
from services.runtime.settings import Settings

if TYPE_CHECKING:  # imported where used: commands that need no client start faster
    from services.client import GatewayClient

SERVICES = ("router", "executor", "media-store", "batches", "edge", "emulator", "usage-sink", "audit-sink")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="llmgw", description="Event-driven LLM gateway")
    sub = p.add_subparsers(dest="cmd", required=True)

    up = sub.add_parser("up", help="start Kafka, S3, the emulator and every service")
    up.add_argument("--detach", action="store_true", help="return once everything is ready")
    up.add_argument("--routers", type=int, default=1)
    up.add_argument("--executors", type=int, default=1)
    up.add_argument("--no-edge", action="store_true")
    up.add_argument(
        "--progress", action="store_true", help="a line per step on stderr (default: on a terminal)"
    )
    sub.add_parser("down", help="stop everything `up` started")
    st = sub.add_parser("status", help="each component with pid, endpoint and health")
    st.add_argument("--json", action="store_true")
    rs = sub.add_parser("restart", help="(re)start one component (e.g. router-0), stopped or running")
    rs.add_argument("name")
    sp = sub.add_parser("stop", help="stop one component (e.g. executor-1); `restart` brings it back")
    sp.add_argument("name")

    run = sub.add_parser("run", help="run one service in the foreground")
    run.add_argument("service", choices=SERVICES)

    tp = sub.add_parser("topics", help="topics.yaml against the broker")
    tp.add_argument("action", choices=["apply", "check"])

    sc = sub.add_parser("schemas", help="JSON Schemas of the events")
    sc.add_argument("action", choices=["write", "check", "compat"])
    sc.add_argument("--base", default=None, help="compat: the git revision whose schemas/ readers hold to")

    aa = sub.add_parser("asyncapi", help="write asyncapi.yaml, the Kafka contract")
    aa.add_argument("--check", action="store_true", help="exit 1, naming each difference, if not current")
    aa.add_argument("--output", default=None, help="where to write (default: asyncapi.yaml at the repo root)")

    sub.add_parser("config", help="validate the configuration file and exit")

    ch = sub.add_parser("chat", help="send one chat request through Kafka")
    ch.add_argument("prompt")
    ch.add_argument("--model", default="demo-openai")
    ch.add_argument("--stream", action="store_true")
    ch.add_argument("--tenant", default="demo")
    ch.add_argument("--user", default="cli")
    ch.add_argument("--timeout", type=float, default=60)

    em = sub.add_parser("embed", help="embed one or more texts through Kafka (one vector per text)")
    em.add_argument("texts", nargs="+")
    em.add_argument("--model", default="demo-embed")
    em.add_argument("--dimensions", type=int, default=None)
    em.add_argument("--tenant", default="demo")
    em.add_argument("--user", default="cli")
    em.add_argument("--timeout", type=float, default=60)

    md = sub.add_parser("models", help="the models a tenant may use, through Kafka (models.list)")
    md.add_argument("--capability", default=None)
    md.add_argument("--operation", default=None)
    md.add_argument("--provider", default=None)
    md.add_argument("--tenant", default="demo")
    md.add_argument("--json", action="store_true")
    md.add_argument("--timeout", type=float, default=60)

    us = sub.add_parser("usage", help="the usage ledger on S3")
    us_sub = us.add_subparsers(dest="action", required=True)
    ur = us_sub.add_parser("report", help="requests, tokens and cost of one tenant, from S3")
    ur.add_argument("--tenant", required=True)
    ur.add_argument("--since", default="24h", help="a duration back from now (30m, 24h, 7d) or an ISO date")
    ur.add_argument(
        "--by",
        choices=["model", "user", "key", "day"],
        default=None,
        help="key: the caller's client_id (usage records carry no API key name)",
    )
    ur.add_argument("--json", action="store_true")
    uss = us_sub.add_parser(
        "sessions", help="Realtime sessions of one tenant and their usage summaries (not summed by report)"
    )
    uss.add_argument("--tenant", required=True)
    uss.add_argument(
        "--since", default="24h", help="sessions started since: a duration (30m, 24h, 7d) or an ISO date"
    )
    uss.add_argument("--json", action="store_true")

    jb = sub.add_parser("jobs", help="asynchronous jobs, from llm.jobs")
    jb_sub = jb.add_subparsers(dest="action", required=True)
    jl = jb_sub.add_parser("list", help="every job llm.jobs holds, oldest first")
    jl.add_argument("--tenant", default=None)
    jl.add_argument(
        "--status", choices=["pending", "running", "completed", "failed", "cancelled"], default=None
    )
    jl.add_argument("--json", action="store_true")

    bt = sub.add_parser("batches", help="batches, from llm.batches")
    bt_sub = bt.add_subparsers(dest="action", required=True)
    bl = bt_sub.add_parser("list", help="every batch llm.batches holds, newest first")
    bl.add_argument("--tenant", default=None)
    bl.add_argument(
        "--status",
        choices=[
            "validating",
            "in_progress",
            "finalizing",
            "completed",
            "failed",
            "expired",
            "cancelling",
            "cancelled",
        ],
        default=None,
    )
    bl.add_argument("--json", action="store_true")

    au = sub.add_parser("audit", help="the audit ledger on S3")
    au_sub = au.add_subparsers(dest="action", required=True)
    av = au_sub.add_parser("verify", help="check every hash chain; non-zero naming the first bad record")
    av.add_argument("--tenant", default=None, help="count this tenant's records (every chain is checked)")

    args = p.parse_args(argv)
    settings = Settings.from_env()
    try:
        return COMMANDS[args.cmd](args, settings)
    except ConfigError as exc:
        print(f"llmgw: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, TimeoutError, KeyError) as exc:
        print(f"llmgw: {exc}", file=sys.stderr)
        return 1


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from .output import progress_for
    from .stack import Stack

    load_config(settings.config_path, settings.env)  # a bad config stops start-up here, naming the key
    stack = Stack(settings, progress=progress_for(args.progress))
    t0 = time.monotonic()
    stack.up(routers=args.routers, executors=args.executors, edge=not args.no_edge)
    print(f"llmgw: ready in {time.monotonic() - t0:.1f}s")
    for c in stack.status():
        print(f"  {c['name']:<12} pid={c['pid']}  {c['endpoint'] or ''}")
    if args.detach:
        return 0
    print("llmgw: Ctrl-C stops everything")
    stop = {"flag": False}

    def handler(*_: object) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not stop["flag"]:
        time.sleep(0.5)
    stack.down()
    return 0


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    from .stack import Stack

    stopped = Stack(settings).down()
    print("llmgw: stopped " + (", ".join(stopped) if stopped else "nothing (not running)"))
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from .stack import Stack

    rows = Stack(settings).status()
    circuits: list[dict[str, Any]] | None = None
    circuits_error = None
    if any(r["name"] == "kafka" and r["running"] for r in rows):
        from .circuits import circuit_states

        try:
            circuits = asyncio.run(circuit_states(settings))
        except Exception as exc:  # the components' status is still worth printing
            circuits_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if args.json:
        out: dict[str, Any] = {"components": rows}
        if circuits is not None:
            out["circuits"] = circuits
        if circuits_error is not None:
            out["circuits_error"] = circuits_error
        print(json.dumps(out, indent=2))
    else:
        for r in rows:
            print(
                f"{r['name']:<12} {'up' if r['running'] else 'down':<5} healthy={r['healthy']} pid={r['pid']} {r['endpoint'] or ''}"
            )
        if circuits_error is not None:
            print(f"circuits: unknown ({circuits_error})")
        elif circuits is not None:
            shut = [c for c in circuits if c["state"] != "closed"]
            print(f"circuits: {len(circuits) - len(shut)} closed" + (", not closed:" if shut else ""))
            for c in shut:
                until = f" until {c['until']}" if c["until"] else ""
                print(f"  {c['deployment']:<40} {c['state']}{until} failures={c['failures']} by={c['by']}")
    return 0 if rows and all(r["running"] for r in rows) else 3


def cmd_restart(args: argparse.Namespace, settings: Settings) -> int:
    from .stack import Stack

    c = Stack(settings).restart(args.name)
    print(f"llmgw: restarted {c.name} (pid {c.pid})")
    return 0


def cmd_stop(args: argparse.Namespace, settings: Settings) -> int:
    from .stack import Stack

    Stack(settings).stop(args.name)
    print(f"llmgw: stopped {args.name}")
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    module = f"services.{args.service.replace('-', '_')}"
    sys.argv = [module]
    runpy.run_module(module, run_name="__main__")
    return 0


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from services.runtime.topics import TopicConfigurationMismatch, Topics, apply_topics

    topics = Topics.load(settings.topics_path, settings.topic_prefix)
    try:
        created = asyncio.run(apply_topics(settings.bootstrap_servers, topics, create=args.action == "apply"))
    except TopicConfigurationMismatch as exc:
        print(f"llmgw: topics differ from {settings.topics_path}: {exc}", file=sys.stderr)
        return 1
    print(f"llmgw: topics ok ({len(created)} created{': ' + ', '.join(created) if created else ''})")
    return 0


def cmd_schemas(args: argparse.Namespace, settings: Settings) -> int:
    from services.contracts.schemas import check_schemas, write_schemas

    if args.action == "write":
        for path in write_schemas():
            print(path)
        return 0
    if args.action == "compat":
        return _schemas_compat(args.base)
    drift = check_schemas()
    for d in drift:
        print(f"llmgw: {d}", file=sys.stderr)
    return 1 if drift else 0


def _schemas_compat(base: str | None) -> int:
    from services.contracts.compat import compare_with_revision

    if not base:
        print("llmgw: schemas compat needs --base <git revision>", file=sys.stderr)
        return 2
    problems = compare_with_revision(base)
    for p in problems:
        print(f"llmgw: not backward compatible with {base}: {p}", file=sys.stderr)
    if problems:
        print("llmgw: a change readers cannot take needs a new type version (file)", file=sys.stderr)
        return 1
    print(f"llmgw: schemas/ is backward compatible with {base}")
    return 0


def cmd_asyncapi(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from services.contracts.asyncapi import DOCUMENT, check_document, write_document

    path = Path(args.output) if args.output else DOCUMENT
    if not args.check:
        print(write_document(path))
        return 0
    drift = check_document(path)
    for d in drift:
        print(f"llmgw: {d}", file=sys.stderr)
    return 1 if drift else 0


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    cfg = load_config(settings.config_path, settings.env)
    print(f"llmgw: {settings.config_path} is valid ({len(cfg.models)} models, {len(cfg.tenants)} tenants)")
    return 0


def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    from services.client import GatewayClient
    from services.contracts.errors import GatewayError

    async def go() -> int:
        async with GatewayClient(
            settings.bootstrap_servers,
            args.tenant,
            args.user,
            timeout_s=args.timeout,
            topics_path=settings.topics_path,
            topic_prefix=settings.topic_prefix,
        ) as gw:
            msgs = [{"role": "user", "content": args.prompt}]
            try:
                if args.stream:
                    async for chunk in gw.stream_chat(model=args.model, messages=msgs):
                        if chunk.delta.content:
                            print(chunk.delta.content, end="", flush=True)
                        if chunk.final:
                            print(
                                f"\n[{chunk.finish_reason}; usage {chunk.usage.model_dump() if chunk.usage else None}]"
                            )
                else:
                    r = await gw.chat(model=args.model, messages=msgs)
                    print(r.message.content if r.message else "")
                    print(
                        f"[{r.finish_reason}; {r.provider}/{r.model}; usage {r.usage.model_dump() if r.usage else None}]"
                    )
            except GatewayError as exc:
                print(f"llmgw: {exc.code}: {exc.message}", file=sys.stderr)
                return 1
        return 0

    return asyncio.run(go())


def _over_kafka(
    settings: Settings,
    tenant: str,
    user: str,
    timeout: float,
    call: Callable[[GatewayClient], Awaitable[None]],
) -> int:
    """Run ``call(gw)`` with a client of ``tenant``; a gateway error prints its code, exit 1."""
    from services.client import GatewayClient
    from services.contracts.errors import GatewayError

    async def go() -> int:
        async with GatewayClient(
            settings.bootstrap_servers,
            tenant,
            user,
            timeout_s=timeout,
            topics_path=settings.topics_path,
            topic_prefix=settings.topic_prefix,
        ) as gw:
            try:
                await call(gw)
            except GatewayError as exc:
                print(f"llmgw: {exc.code}: {exc.message}", file=sys.stderr)
                return 1
        return 0

    return asyncio.run(go())


def cmd_embed(args: argparse.Namespace, settings: Settings) -> int:
    from services.contracts.errors import InternalError

    async def call(gw: GatewayClient) -> None:
        r = await gw.embed(model=args.model, input=args.texts, dimensions=args.dimensions)
        if r.output is None or r.output.kind != "embeddings":
            raise InternalError(f"the answer to {r.request_id} carries no embeddings")
        for text, item in zip(args.texts, r.output.data, strict=True):
            head = ", ".join(f"{v:.4f}" for v in item.embedding[:4])
            print(f"{text!r}: [{head}, ...] ({len(item.embedding)} dims)")
        print(f"[{r.provider}/{r.model}; usage {r.usage.model_dump() if r.usage else None}]")

    return _over_kafka(settings, args.tenant, args.user, args.timeout, call)


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    async def call(gw: GatewayClient) -> None:
        models = await gw.list_models(
            capability=args.capability, **{k: v for k in ("operation", "provider") if (v := getattr(args, k))}
        )
        if args.json:
            print(json.dumps([m.model_dump(mode="json") for m in models], indent=2))
            return
        for m in models:
            usable = "usable" if m.usable else "UNUSABLE"
            print(f"{m.id:<20} {','.join(m.operations):<12} {usable:<8} {','.join(m.capabilities)}")

    return _over_kafka(settings, args.tenant, "cli", args.timeout, call)


def cmd_usage(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime

    from services.runtime.s3 import S3ObjectStore
    from services.usage_sink.report import parse_since, usage_report
    from services.usage_sink.sessions import list_sessions

    from .output import sessions_table

    now = datetime.now(UTC)
    try:
        since = parse_since(args.since, now)
    except ValueError as exc:
        print(f"llmgw: {exc}", file=sys.stderr)
        return 2

    async def go() -> int:
        async with S3ObjectStore(
            settings.usage_bucket, endpoint_url=settings.s3_url, create_bucket=False
        ) as store:
            if args.action == "sessions":
                listing = await list_sessions(store, args.tenant, since=since, until=now)
                print(
                    json.dumps(listing.as_json(), indent=2)
                    if args.json
                    else sessions_table(listing.as_json())
                )
                return 0
            report = await usage_report(store, args.tenant, since=since, until=now, by=args.by)
        from .output import usage_table

        print(json.dumps(report.as_json(), indent=2) if args.json else usage_table(report.as_json()))
        return 0

    return asyncio.run(go())


def cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    from services.runtime.jobs import JobsView
    from services.runtime.topics import Topics

    async def go() -> int:
        view = JobsView(settings.bootstrap_servers, Topics.load(settings.topics_path, settings.topic_prefix))
        await view.start()
        try:
            jobs = view.jobs(args.tenant, args.status)
        finally:
            await view.aclose()
        if args.json:
            print(json.dumps([j.model_dump(mode="json", exclude={"result"}) for j in jobs], indent=2))
            return 0
        print(f"{'job':<34} {'tenant':<12} {'operation':<16} {'model':<16} {'status':<10} created")
        for j in jobs:
            print(
                f"{j.job_id:<34} {j.tenant_id:<12} {j.operation:<16} {(j.model or '-'):<16} {j.status:<10}"
                f" {j.created_at.isoformat(timespec='seconds')}"
            )
        return 0

    return asyncio.run(go())


def cmd_batches(args: argparse.Namespace, settings: Settings) -> int:
    from services.runtime.batches import BatchesView
    from services.runtime.topics import Topics

    from .output import table

    async def go() -> int:
        view = BatchesView(
            settings.bootstrap_servers, Topics.load(settings.topics_path, settings.topic_prefix)
        )
        await view.start()
        try:
            batches = view.batches(args.tenant, args.status)
        finally:
            await view.aclose()
        if args.json:
            print(json.dumps([b.model_dump(mode="json") for b in batches], indent=2))
            return 0
        rows = [
            [
                b.batch_id,
                b.tenant_id,
                b.api,
                b.model or "-",
                b.path or "-",
                b.status,
                f"{b.counts.succeeded}/{b.counts.errored}/{b.counts.canceled}/{b.counts.expired}/{b.counts.total}",
                b.created_at.isoformat(timespec="seconds"),
            ]
            for b in batches
        ]
        print(
            table(
                ["batch", "tenant", "api", "model", "path", "status", "ok/err/cxl/exp/total", "created"], rows
            )
        )
        return 0

    return asyncio.run(go())


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from services.audit_sink.verify import verify
    from services.runtime.s3 import S3ObjectStore

    async def go() -> int:
        async with S3ObjectStore(
            settings.audit_bucket, endpoint_url=settings.s3_url, create_bucket=False
        ) as store:
            result = await verify(store, args.tenant)
        for finding in result.findings:
            print(f"llmgw: audit {finding.kind}: {finding.message}", file=sys.stderr)
        if not result.ok:
            return 1
        whose = f" of tenant {args.tenant}" if args.tenant else ""
        print(
            f"llmgw: verified {result.records} audit records{whose} "
            f"({result.total} in {result.chains} chains): intact"
        )
        return 0

    return asyncio.run(go())


COMMANDS = {
    "up": cmd_up,
    "down": cmd_down,
    "status": cmd_status,
    "restart": cmd_restart,
    "stop": cmd_stop,
    "run": cmd_run,
    "topics": cmd_topics,
    "schemas": cmd_schemas,
    "asyncapi": cmd_asyncapi,
    "config": cmd_config,
    "chat": cmd_chat,
    "embed": cmd_embed,
    "models": cmd_models,
    "usage": cmd_usage,
    "jobs": cmd_jobs,
    "batches": cmd_batches,
    "audit": cmd_audit,
}

if __name__ == "__main__":
    sys.exit(main())

"""The usage and audit sinks in the whole stack: requests answered through the pipeline show up
in ``llmgw usage report`` (read from S3), and ``llmgw audit verify`` finds the chains intact."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from services.client import GatewayClient

ROOT = Path(__file__).resolve().parents[2]


async def llmgw(settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "LLMGW_TOPIC_PREFIX": settings.topic_prefix,
        "LLMGW_STATE_DIR": str(settings.state_dir),
        "LLMGW_S3_ENDPOINT": f"http://127.0.0.1:{settings.s3_port}",
    }
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli.main", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_the_sinks_run_in_the_stack(stack, stack_settings):
    res = await llmgw(stack_settings, "status", "--json")
    comps = {c["name"]: c for c in json.loads(res.stdout)["components"]}
    for name in ("usage-sink", "audit-sink"):
        assert comps[name]["running"] and comps[name]["healthy"], comps[name]


async def test_usage_report_counts_what_the_pipeline_answered(stack, stack_settings):
    user = f"ledger-{uuid.uuid4().hex[:8]}"
    async with GatewayClient(
        stack_settings.bootstrap_servers, "demo", user, topic_prefix=stack_settings.topic_prefix, timeout_s=30
    ) as gw:
        results = [
            await gw.chat(model="demo-openai", messages=[{"role": "user", "content": f"count me {i}"}])
            for i in range(3)
        ]
    assert all(r.status == "ok" for r in results)
    tokens = sum(r.usage.total_tokens for r in results)
    deadline = time.monotonic() + 30
    while True:  # the sink writes a batch at most a second after its first record
        res = await llmgw(
            stack_settings, "usage", "report", "--tenant", "demo", "--since", "1h", "--by", "user", "--json"
        )
        assert res.returncode == 0, res.stderr
        mine = [g for g in json.loads(res.stdout)["groups"] if g["key"] == user]
        if mine and mine[0]["requests"] >= 3 or time.monotonic() > deadline:
            break
    assert mine and mine[0]["requests"] == 3 and mine[0]["total_tokens"] == tokens and mine[0]["errors"] == 0


async def test_audit_verify_finds_the_chains_intact(stack, stack_settings, gw):
    await gw.chat(model="demo-openai", messages=[{"role": "user", "content": "audit the auditor"}])
    deadline = time.monotonic() + 30
    while True:
        res = await llmgw(stack_settings, "audit", "verify", "--tenant", "demo")
        assert res.returncode == 0, res.stderr
        if " 0 audit records" not in res.stdout or time.monotonic() > deadline:
            break
    assert "intact" in res.stdout and " 0 audit records" not in res.stdout, res.stdout

"""The `llmgw` command against the running stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from services.runtime.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def llmgw(settings, *args, extra_env=None, timeout=120):
    env = (
        os.environ
        | {
            "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "LLMGW_TOPIC_PREFIX": settings.topic_prefix,
            "LLMGW_STATE_DIR": str(settings.state_dir),
        }
        | (extra_env or {})
    )
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_status_json_lists_every_component(stack, stack_settings):
    res = llmgw(stack_settings, "status", "--json")
    assert res.returncode == 0, res.stderr
    comps = {c["name"]: c for c in json.loads(res.stdout)["components"]}
    assert {"kafka", "s3", "emulator", "router-0", "router-1", "executor-0", "executor-1"} <= set(comps)
    for name in ("s3", "emulator", "router-0", "executor-1"):
        assert comps[name]["running"] and comps[name]["healthy"] and comps[name]["pid"] > 0
    assert comps["emulator"]["endpoint"] == f"http://127.0.0.1:{stack_settings.emulator_port}"


def test_chat_command_sync_and_stream(stack, stack_settings):
    res = llmgw(stack_settings, "chat", "hello there", "--model", "demo-anthropic")
    assert res.returncode == 0, res.stderr
    assert "tok0" in res.stdout and "emulator-anthropic/claude-emu" in res.stdout
    res = llmgw(stack_settings, "chat", "hello", "--model", "demo-ollama", "--stream")
    assert res.returncode == 0, res.stderr
    assert "[stop; usage" in res.stdout and "'completion_tokens': 8" in res.stdout


def test_chat_command_reports_gateway_errors(stack, stack_settings):
    res = llmgw(stack_settings, "chat", "hi", "--model", "nope")
    assert res.returncode == 1
    assert "model_not_found: model 'nope' does not exist" in res.stderr


def test_restart_one_service_keeps_the_gateway_answering(stack, stack_settings):
    res = llmgw(stack_settings, "restart", "executor-1")
    assert res.returncode == 0, res.stderr
    res = llmgw(stack_settings, "chat", "after restart", "--model", "demo-openai")
    assert res.returncode == 0 and "tok0" in res.stdout, res.stderr


def test_topics_check_passes_on_the_stack(stack, stack_settings):
    res = llmgw(stack_settings, "topics", "check")
    assert res.returncode == 0 and "topics ok" in res.stdout, res.stderr


def test_invalid_config_stops_start_up_naming_the_key(tmp_path, stack_settings):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "providers: {p: {kind: openai, base_url: u}}\nmodels: {m: {deployments: [{provider: q, model: x}]}}\n"
    )
    res = llmgw(
        stack_settings,
        "up",
        "--detach",
        extra_env={"LLMGW_CONFIG": str(bad), "LLMGW_STATE_DIR": str(tmp_path / "state")},
    )
    assert res.returncode == 2
    assert "models.m.deployments.0.provider: unknown provider 'q'" in res.stderr
    assert not (tmp_path / "state" / "stack.json").exists()


def test_up_detach_then_down(tmp_path, stack_settings):
    from services.cli import infra

    env = {
        "LLMGW_STATE_DIR": str(tmp_path / "st"),
        "LLMGW_TOPIC_PREFIX": stack_settings.topic_prefix + "up.",
        "LLMGW_EMULATOR_PORT": str(infra.free_port()),
        "LLMGW_S3_PORT": str(infra.free_port()),
        "LLMGW_EDGE_PORT": str(infra.free_port()),
    }
    res = llmgw(stack_settings, "up", "--detach", "--no-edge", extra_env=env)
    try:
        assert res.returncode == 0, res.stderr
        assert "ready in" in res.stdout
        status = json.loads(llmgw(stack_settings, "status", "--json", extra_env=env).stdout)["components"]
        pids = [c["pid"] for c in status if c["pid"]]
        assert {c["name"] for c in status} >= {"s3", "emulator", "router-0", "executor-0"}
        assert all(c["running"] for c in status)
        chat = llmgw(stack_settings, "chat", "hi", "--model", "demo-openai", extra_env=env)
        assert chat.returncode == 0 and "tok0" in chat.stdout, chat.stderr
    finally:
        down = llmgw(stack_settings, "down", extra_env=env)
    assert down.returncode == 0 and "stopped" in down.stdout
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split(") ")[1][:1]
        )


def test_stop_one_router_the_other_takes_over_then_restart(stack, stack_settings):
    res = llmgw(stack_settings, "stop", "router-1")
    assert res.returncode == 0 and "stopped router-1" in res.stdout, res.stderr
    status = {
        c["name"]: c for c in json.loads(llmgw(stack_settings, "status", "--json").stdout)["components"]
    }
    assert not status["router-1"]["running"] and status["router-0"]["running"]
    for _ in range(3):  # every partition of llm.requests is served by router-0 now
        chat = llmgw(stack_settings, "chat", "only one router", "--model", "demo-ollama")
        assert chat.returncode == 0 and "tok0" in chat.stdout, chat.stderr
    res = llmgw(stack_settings, "restart", "router-1")
    assert res.returncode == 0, res.stderr
    status = {
        c["name"]: c for c in json.loads(llmgw(stack_settings, "status", "--json").stdout)["components"]
    }
    assert status["router-1"]["running"] and status["router-1"]["healthy"]


def test_stop_unknown_component_is_named(stack, stack_settings):
    res = llmgw(stack_settings, "stop", "router-9")
    assert res.returncode == 1 and "no component 'router-9'" in res.stderr


def test_embed_command_prints_one_vector_per_text(stack, stack_settings):
    res = llmgw(
        stack_settings, "embed", "first text", "second text", "--model", "demo-embed", "--dimensions", "8"
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("'first text': [") and lines[0].endswith("(8 dims)")
    assert lines[1].startswith("'second text': [")
    assert "emulator-openai/text-embedding-emu" in lines[2]


def test_models_command_filters_by_capability_and_tenant(stack, stack_settings):
    res = llmgw(stack_settings, "models", "--capability", "embeddings", "--json")
    assert res.returncode == 0, res.stderr
    ids = {m["id"] for m in json.loads(res.stdout)}
    assert {"demo-embed", "demo-embed-ollama"} <= ids and "demo-openai" not in ids
    res = llmgw(stack_settings, "models", "--tenant", "restricted")
    assert res.returncode == 0, res.stderr
    allowed = load_config(ROOT / "config" / "demo.yaml", env={}).tenants["restricted"].allowed_models
    assert [line.split()[0] for line in res.stdout.splitlines()] == sorted(allowed)

"""Circuit breaking on the whole stack: ``demo-fragile`` (its circuit opens after 2 failed calls
in a row, for 10 s) keeps failing, is skipped (its requests fall back without calling it), shows
in ``llmgw status`` and in the router's routing statistics, and is probed by one request once the
cool-down is over, which closes it."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime

import httpx
import pytest

from services.cli.circuits import circuit_states
from services.contracts.errors import ProviderError
from services.contracts.events import new_id

from .test_cli import llmgw

FRAGILE = "demo-fragile/emulator-openai/gpt-emu-fragile"


async def until(cond, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    """Poll ``cond`` (a coroutine function) until it is true; its value."""
    async with asyncio.timeout(timeout):
        while True:
            if value := await cond():
                return value
            await asyncio.sleep(0.1)


async def circuit(settings) -> dict | None:  # type: ignore[no-untyped-def,type-arg]
    return next((c for c in await circuit_states(settings) if c["deployment"] == FRAGILE), None)


async def calls_for(emulator_url: str, text: str) -> list[str]:
    async with httpx.AsyncClient(base_url=emulator_url) as http:
        calls = (await http.get("/_emulator/calls", params={"kind": "chat"})).json()
    return [c["model"] for c in calls if c["inputs"] == [text]]


async def test_a_failing_deployment_is_skipped_then_probed_once_and_closed(gw, stack_settings, emulator_url):
    msgs = [{"role": "user", "content": "fragile"}]
    for _ in range(3):  # two executors: one of them sees two failures in a row
        with pytest.raises(ProviderError):
            await gw.chat(model="demo-fragile", messages=msgs, emulator_scenario="status=503")
    opened = await until(lambda: _state(stack_settings, "open"))
    assert opened["failures"] >= 2 and opened["error_code"] == "provider_error"

    # skipped: the request falls back without a call to the open deployment
    said = f"skip me {new_id()}"
    r = await gw.chat(
        model="demo-fragile", messages=[{"role": "user", "content": said}], fallbacks=["demo-openai"]
    )
    assert r.status == "ok" and r.fallback_used and r.alias == "demo-openai" and r.attempts == 1
    assert await calls_for(emulator_url, said) == ["gpt-emu"]

    # the router's routing statistics know: the deployment is not usable
    async def unusable() -> bool:
        (info,) = await gw.list_models(model="demo-fragile")
        return not info.deployments[0].usable

    await until(unusable)
    status = json.loads((await asyncio.to_thread(llmgw, stack_settings, "status", "--json")).stdout)
    shown = {c["deployment"]: c for c in status["circuits"]}[FRAGILE]
    assert shown["state"] in ("open", "cooled") and shown["by"].startswith("executor-")

    # the cool-down ends: of the requests that come next, one probes it, and it closes
    await until(_cooled(opened), timeout=20)
    texts = [f"probe {i} {new_id()}" for i in range(4)]
    results = await asyncio.gather(
        *(
            gw.chat(
                model="demo-fragile", messages=[{"role": "user", "content": t}], fallbacks=["demo-openai"]
            )
            for t in texts
        )
    )
    assert all(r.status == "ok" for r in results)
    models = [m for t in texts for m in await calls_for(emulator_url, t)]
    assert models.count("gpt-emu-fragile") == 1  # one probe, the rest fell back meanwhile
    await until(lambda: _state(stack_settings, "closed"))
    r = await gw.chat(model="demo-fragile", messages=msgs)
    assert r.status == "ok" and not r.fallback_used


async def _state(settings, state: str) -> dict | None:  # type: ignore[no-untyped-def,type-arg]
    c = await circuit(settings)
    return c if c is not None and c["state"] == state else None


def _cooled(opened: dict):  # type: ignore[no-untyped-def,type-arg]
    end = datetime.fromisoformat(opened["until"]).timestamp()

    async def over() -> bool:
        return time.time() > end

    return over

"""Jobs through the whole stack, beyond tests/e2e/test_jobs.py (README "Jobs", "Videos"):

* polling an asynchronous provider follows its hints (the emulator counts the polls);
* a result inline when small and in S3 (moto) when large, answered whole either way;
* kill -9 of the edge, a router and the media-store mid-job: the job still ends exactly once
  (one terminal record on ``llm.jobs``) and is billed once (one ``llm.usage`` record);
* each state seen on ``llm.jobs`` in order (pending, running, then the terminal one).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from services.contracts.events import TERMINAL_JOB_STATES, ImageGenerateRequested
from services.runtime.topics import Topics
from tests.e2e.helpers import TopicTail
from tests.e2e.test_crash_safety import component, kill_and_restart

DEMO = {"authorization": "Bearer sk-llmgw-demo"}


def topics_of(stack_settings) -> Topics:
    return Topics.load(stack_settings.topics_path, stack_settings.topic_prefix)


def states_of(records, job_id: str, tenant: str = "demo") -> list[dict[str, Any]]:
    key = f"{tenant}/{job_id}".encode()
    return [orjson.loads(r.value) for r in records if r.key == key and r.value]


def terminal(records, job_id: str) -> list[dict[str, Any]]:
    return [s for s in states_of(records, job_id) if s["status"] in TERMINAL_JOB_STATES]


def billed(records, request_id: str) -> list[dict[str, Any]]:
    return [u for r in records if (u := orjson.loads(r.value))["request_id"] == request_id]


def ended(job_id: str) -> Callable[[list[Any]], bool]:
    return lambda rs: bool(terminal(rs, job_id))


def used(request_id: str) -> Callable[[list[Any]], bool]:
    return lambda rs: any(request_id.encode() in (r.value or b"") for r in rs)


async def settled_once(states: TopicTail, usage: TopicTail, job_id: str, status: str = "completed") -> None:
    """The job ended ``status`` exactly once and was billed exactly once. (A second terminal record
    or usage record would come right behind the first; a short quiet period lets it show.)"""
    await states.until(ended(job_id), timeout=60)
    await usage.until(used(job_id), timeout=60)
    await asyncio.sleep(1.0)  # not synchronisation: the window in which a duplicate would appear
    ends = terminal(states.records, job_id)
    bills = billed(usage.records, job_id)
    assert [e["status"] for e in ends] == [status], ends
    assert len(bills) == 1, bills


# --- polling an asynchronous provider -------------------------------------------------------------


async def polls_of(emulator_url: str, video_id: str) -> list[float]:
    async with aiohttp.ClientSession() as s, s.get(f"{emulator_url}/_emulator/videos/{video_id}") as r:
        assert r.status == 200
        return list((await r.json())["at"])


async def test_polls_follow_the_providers_retry_after_and_busy_answers(gw, emulator_url):
    # 2 s of generation; every poll says "Retry-After: 1.5", the first answers 429: without the
    # hints the gateway would poll every 0.5 s (jobs.poll_interval_s), five or more times
    result = await gw.generate_video(
        "demo-video",
        "hinted",
        seconds="4",
        wait=True,
        emulator_scenario="video_ms=500,video_retry_after_s=1.5,video_poll_busy=1",
    )
    at = await polls_of(emulator_url, result.output.provider_id)
    gaps = [b - a for a, b in zip(at, at[1:], strict=False)]
    assert 2 <= len(at) <= 3, at
    assert all(g >= 1.45 for g in gaps), gaps


async def test_polls_back_off_while_the_provider_reports_no_progress(gw, emulator_url):
    # queued for 4 s (progress 0 throughout): waits of 0.5, 0.75, 1.125, 1.69 ... not 0.5 each
    result = await gw.generate_video(
        "demo-video", "patient", seconds="4", wait=True, emulator_scenario="video_ms=100,video_queue_ms=4000"
    )
    at = await polls_of(emulator_url, result.output.provider_id)
    queued = [b - a for a, b in zip(at, at[1:], strict=False)][:4]
    assert len(at) <= 7, at  # a fixed 0.5 s interval would poll 9 times or more
    assert all(b > a * 1.3 for a, b in zip(queued, queued[1:], strict=False)), queued


# --- results large or small -------------------------------------------------------------------------


async def test_a_small_result_is_inline_and_a_large_one_in_s3_both_answered_whole(
    gw, edge_url, stack_settings
):
    big = " ".join(f"w{i}" for i in range(50_000))  # ~340 KB echoed back: above media.inline_max_bytes
    async with TopicTail(stack_settings.bootstrap_servers, topics_of(stack_settings).jobs.name) as states:
        small_id = await gw.submit(
            gw.build_request("demo-openai", [{"role": "user", "content": "a small one"}], stream=False)
        )
        big_id = await gw.submit(
            gw.build_request(
                "demo-openai", [{"role": "user", "content": big}], stream=False, emulator_scenario="echo"
            )
        )
        small, large = await gw.wait_job(small_id, timeout_s=60), await gw.wait_job(big_id, timeout_s=60)
        await states.until(lambda rs: ended(small_id)(rs) and ended(big_id)(rs))
    [small_rec], [large_rec] = terminal(states.records, small_id), terminal(states.records, big_id)
    assert small_rec["result"]["message"]["content"] and small_rec.get("result_ref") is None
    ref = large_rec["result_ref"]
    assert large_rec.get("result") is None and ref["key"] == f"tenants/demo/jobs/{big_id}/result.json"
    assert ref["bytes"] > 262_144
    assert small.result is not None and small.result.message.content
    assert large.result is not None and large.result.message.content.split() == big.split()
    assert (await gw.get_job(big_id)).result == large.result
    async with aiohttp.ClientSession(base_url=edge_url) as s:
        async with s.get(f"/v1/jobs/{big_id}", headers=DEMO) as r:
            assert r.status == 200
            got = await r.json()
    assert got["status"] == "completed" and got["result"]["message"]["content"].split() == big.split()


# --- kill -9 mid-job ------------------------------------------------------------------------------


async def test_an_async_request_survives_kill_9_of_its_edge(gw, stack, edge_url, stack_settings):
    topics = topics_of(stack_settings)
    body = {
        "model": "demo-openai",
        "messages": [{"role": "user", "content": "edge dies"}],
        "async": True,
        "emulator_scenario": "ttfb_ms=2000",
    }
    async with (
        TopicTail(stack_settings.bootstrap_servers, topics.jobs.name) as states,
        TopicTail(stack_settings.bootstrap_servers, topics.usage.name) as usage,
    ):
        async with (
            aiohttp.ClientSession(base_url=edge_url) as s,
            s.post("/v1/chat/completions", json=body, headers=DEMO) as r,
        ):
            assert r.status == 202
            job_id = (await r.json())["id"]
        await kill_and_restart(stack, "edge")  # the job's state is on Kafka, not in the edge
        await settled_once(states, usage, job_id)
        async with (
            aiohttp.ClientSession(base_url=edge_url) as s,
            s.get(f"/v1/jobs/{job_id}", headers=DEMO) as r,
        ):
            got = await r.json()
    assert r.status == 200 and got["status"] == "completed" and got["result"]["message"]["content"]


async def test_a_job_survives_kill_9_of_the_routers(gw, stack, stack_settings):
    """Both routers die with the job's request on ``llm.requests``, uncommitted: after the
    restart it is delivered again, and the job ends once."""
    topics = topics_of(stack_settings)
    req = gw.build_request("demo-openai", [{"role": "user", "content": "router dies"}], stream=False)
    async with (
        TopicTail(stack_settings.bootstrap_servers, topics.jobs.name) as states,
        TopicTail(stack_settings.bootstrap_servers, topics.usage.name) as usage,
    ):
        for name in ("router-0", "router-1"):
            os.kill(component(stack, name).pid, signal.SIGKILL)
        job_id = await gw.submit(req)
        for name in ("router-0", "router-1"):
            await asyncio.to_thread(stack.restart, name)
        await settled_once(states, usage, job_id)
    assert (await gw.get_job(job_id)).status == "completed"


async def test_a_job_survives_kill_9_of_the_router_running_it(gw, stack, stack_settings):
    """A router is killed right after the job is submitted (before or while it handles the
    request); the other router or its restart handles it; the job ends once."""
    topics = topics_of(stack_settings)
    req = gw.build_request(
        "demo-openai",
        [{"role": "user", "content": "router dies mid-way"}],
        stream=False,
        emulator_scenario="ttfb_ms=1000",
    )
    async with (
        TopicTail(stack_settings.bootstrap_servers, topics.jobs.name) as states,
        TopicTail(stack_settings.bootstrap_servers, topics.usage.name) as usage,
    ):
        job_id = await gw.submit(req)
        await kill_and_restart(stack, "router-0")
        await kill_and_restart(stack, "router-1")
        await settled_once(states, usage, job_id)


async def test_a_media_job_survives_kill_9_of_the_media_store(gw, stack, stack_settings):
    """The media-store is killed with the job's generated image on its way (``llm.media.out``):
    after the restart it stores the image, and the job completes once, billed once."""
    topics = topics_of(stack_settings)
    req = ImageGenerateRequested(
        **gw._common({}), model="demo-image", prompt="stored after a crash", size="64x64"
    )
    async with (
        TopicTail(stack_settings.bootstrap_servers, topics.jobs.name) as states,
        TopicTail(stack_settings.bootstrap_servers, topics.usage.name) as usage,
        TopicTail(stack_settings.bootstrap_servers, topics.media_out.name) as produced,
    ):
        os.kill(component(stack, "media-store").pid, signal.SIGKILL)
        try:
            job_id = await gw.submit(req)
            await produced.until(used(job_id), timeout=60)  # the executor is done; the store is not
            assert not terminal(states.records, job_id)
        finally:
            await asyncio.to_thread(stack.restart, "media-store")
        await settled_once(states, usage, job_id)
    done = await gw.get_job(job_id)
    [image] = done.result.output.data
    assert image.media.key.startswith("tenants/demo/media/") and image.media.url


# --- states -----------------------------------------------------------------------------------------


async def test_a_job_moves_pending_running_completed_in_order(gw, stack_settings):
    req = gw.build_request(
        "demo-openai",
        [{"role": "user", "content": "in order"}],
        stream=False,
        emulator_scenario="ttfb_ms=500",
    )
    async with TopicTail(stack_settings.bootstrap_servers, topics_of(stack_settings).jobs.name) as states:
        job_id = await gw.submit(req)
        await gw.wait_job(job_id, timeout_s=30)
        await states.until(ended(job_id))
    records = states_of(states.records, job_id)
    first, last = records[0], records[-1]  # submit wrote the pending record before the request
    assert (
        first["status"] == "pending" and first.get("started_at") is None and first.get("finished_at") is None
    )
    assert last["started_at"] and last["finished_at"] and last["result"]["message"]["content"]
    seen = [s["status"] for s in records]
    assert seen[0] == "pending" and "running" in seen and seen[-1] == "completed"
    assert seen.index("running") > max(i for i, s in enumerate(seen) if s == "pending")


async def test_a_job_the_provider_refuses_fails_with_the_providers_error(gw):
    req = gw.build_request(
        "demo-openai", [{"role": "user", "content": "refused"}], stream=False, emulator_scenario="status=400"
    )
    done = await gw.wait_job(await gw.submit(req), timeout_s=30)
    assert done.status == "failed" and done.error is not None and done.error.code == "provider_error"
    assert done.finished_at is not None and done.result is None


async def test_a_job_kept_past_its_retention_is_expired(gw, stack_settings):
    import pytest

    from services.client import GatewayClient
    from services.contracts.errors import JobExpired

    job_id = await gw.submit(
        gw.build_request("demo-openai", [{"role": "user", "content": "soon gone"}], stream=False)
    )
    await gw.wait_job(job_id, timeout_s=30)
    async with GatewayClient(
        stack_settings.bootstrap_servers, "demo", topic_prefix=stack_settings.topic_prefix
    ) as short:
        short.job_retention_s = 0.001  # as if jobs.retention_s had passed since it finished
        with pytest.raises(JobExpired, match=job_id):
            await short.get_job(job_id)
        with pytest.raises(JobExpired):
            await short.wait_job(job_id, timeout_s=5)
    assert (await gw.get_job(job_id)).status == "completed"  # within the default retention: kept

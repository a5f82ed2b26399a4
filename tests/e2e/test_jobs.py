"""Asynchronous jobs through the whole stack (README "Jobs"): a request with ``job: true`` is
answered through ``llm.jobs``; the SDK submits, reads, waits for and cancels jobs."""

from __future__ import annotations

import pytest

from services.contracts.errors import JobNotFound
from services.contracts.events import ImageGenerateRequested


async def test_a_chat_job_runs_to_completed_with_its_result(gw):
    req = gw.build_request("demo-openai", [{"role": "user", "content": "a job"}], stream=False)
    job_id = await gw.submit(req)
    assert job_id == req.request_id
    done = await gw.wait_job(job_id, timeout_s=30)
    assert done.status == "completed" and done.result is not None and done.result.message.content
    assert done.created_at <= done.started_at <= done.finished_at
    again = await gw.get_job(job_id)
    assert again.status == "completed" and again.result == done.result
    assert job_id in {j.job_id for j in await gw.jobs(status="completed")}


async def test_another_tenants_job_is_not_found(gw, restricted_gw):
    job_id = await gw.submit(
        gw.build_request("demo-openai", [{"role": "user", "content": "mine"}], stream=False)
    )
    await gw.wait_job(job_id, timeout_s=30)
    with pytest.raises(JobNotFound):
        await restricted_gw.get_job(job_id)
    with pytest.raises(JobNotFound):
        await gw.get_job("no-such-job")


async def test_a_rejected_job_fails_with_the_error(gw):
    job_id = await gw.submit(
        gw.build_request("no-such-model", [{"role": "user", "content": "x"}], stream=False)
    )
    done = await gw.wait_job(job_id, timeout_s=30)
    assert done.status == "failed" and done.error is not None and done.error.code == "model_not_found"


async def test_a_media_job_completes_with_stored_media(gw):
    req = ImageGenerateRequested(**gw._common({}), model="demo-image", prompt="a job's picture", size="64x64")
    job_id = await gw.submit(req)
    done = await gw.wait_job(job_id, timeout_s=30)
    assert done.status == "completed" and done.result is not None
    [image] = done.result.output.data
    assert image.media.url and image.media.key.startswith("tenants/demo/media/")


async def test_a_job_is_cancelled(gw):
    req = gw.build_request(
        "demo-openai", [{"role": "user", "content": "slow"}], stream=False, emulator_scenario="ttfb_ms=20000"
    )
    job_id = await gw.submit(req)
    await gw.cancel_job(job_id)  # pending or running: either way the provider call never finishes
    done = await gw.wait_job(job_id, timeout_s=30)
    assert done.status == "cancelled" and done.error is not None and done.error.code == "cancelled"


async def test_any_openai_route_runs_as_a_job_at_the_edge(edge_url, gw):
    import aiohttp

    auth = {"authorization": "Bearer sk-llmgw-demo"}
    async with aiohttp.ClientSession(base_url=edge_url) as s:
        async with s.post(
            "/v1/chat/completions",
            json={"model": "demo-openai", "messages": [{"role": "user", "content": "later"}], "async": True},
            headers=auth,
        ) as r:
            assert r.status == 202
            chat_job = await r.json()
        async with s.post(
            "/v1/images/generations",
            json={"model": "demo-image", "prompt": "a queued picture", "size": "64x64"},
            headers=auth | {"x-llmgw-async": "true"},
        ) as r:
            assert r.status == 202
            image_job = await r.json()
        assert chat_job["object"] == "job" and chat_job["status"] == "pending"
        for job in (chat_job, image_job):
            await gw.wait_job(job["id"], timeout_s=30)  # the tenant's own SDK waits; the edge answers
            async with s.get(f"/v1/jobs/{job['id']}", headers=auth) as r:
                got = await r.json()
            assert (
                r.status == 200 and got["status"] == "completed" and got["finished_at"] >= got["created_at"]
            )
        assert "async" not in str(got["result"])  # the flag never reaches a provider
        async with s.get(
            f"/v1/jobs/{chat_job['id']}", headers={"authorization": "Bearer sk-llmgw-restricted"}
        ) as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "job_not_found"
        async with s.post(f"/v1/jobs/{chat_job['id']}/cancel", headers=auth) as r:
            assert r.status == 200 and (await r.json())["status"] == "completed"  # ended: unchanged


async def test_llmgw_jobs_list_shows_them(gw, stack_settings):
    import asyncio
    import json

    from tests.e2e.test_cli import llmgw

    job_id = await gw.submit(
        gw.build_request("demo-openai", [{"role": "user", "content": "listed"}], stream=False)
    )
    await gw.wait_job(job_id, timeout_s=30)
    res = await asyncio.to_thread(
        llmgw, stack_settings, "jobs", "list", "--tenant", "demo", "--status", "completed", "--json"
    )
    assert res.returncode == 0, res.stderr
    listed = {j["job_id"]: j for j in json.loads(res.stdout)}
    assert listed[job_id]["status"] == "completed" and listed[job_id]["tenant_id"] == "demo"
    table = await asyncio.to_thread(llmgw, stack_settings, "jobs", "list", "--tenant", "restricted")
    assert table.returncode == 0 and job_id not in table.stdout


async def test_a_job_survives_kill_9_of_its_executor_and_ends_once(gw, stack, stack_settings):
    """executor-0 alone runs the job; it is SIGKILLed while the provider call is in flight and
    started again: the plan runs again, the job ends completed once, and is billed once."""
    import orjson

    from services.runtime.topics import Topics
    from tests.e2e.helpers import TopicTail
    from tests.e2e.test_crash_safety import kill_and_restart, only_executor_0

    topics = Topics.load(stack_settings.topics_path, stack_settings.topic_prefix)
    req = gw.build_request(
        "demo-openai",
        [{"role": "user", "content": "survive"}],
        stream=False,
        emulator_scenario="ttfb_ms=2500",
    )
    async with (
        only_executor_0(stack),
        TopicTail(stack_settings.bootstrap_servers, topics.jobs.name) as states,
        TopicTail(stack_settings.bootstrap_servers, topics.usage.name) as usage,
    ):
        job_id = await gw.submit(req)

        def seen(status: str):
            return lambda rs: any(
                r.key == f"demo/{job_id}".encode() and orjson.loads(r.value)["status"] == status
                for r in rs
                if r.value
            )

        await states.until(seen("running"))
        await kill_and_restart(stack, "executor-0")
        done = await gw.wait_job(job_id, timeout_s=60)
        assert done.status == "completed" and done.result is not None
        await usage.until(lambda rs: any(job_id.encode() in (r.value or b"") for r in rs), timeout=30)
        await states.until(seen("completed"))
    terminal = [
        r
        for r in states.records
        if r.key == f"demo/{job_id}".encode() and orjson.loads(r.value)["status"] == "completed"
    ]
    billed = [r for r in usage.records if orjson.loads(r.value)["request_id"] == job_id]
    assert len(terminal) == 1 and len(billed) == 1 and orjson.loads(billed[0].value)["status"] == "ok"

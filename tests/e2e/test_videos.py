"""Video generation through the whole stack (README "Videos"): an asynchronous provider (the
emulator's OpenAI videos API) behind an asynchronous request (a job, the OpenAI SDK's
``videos.create`` / ``retrieve`` / ``download_content``) and behind a synchronous one
(``x-llmgw-wait``, the SDK's ``generate_video(wait=True)``); the video is stored before the
provider's copy expires, billed per second, and a plan run again after its executor died polls
the provider's job instead of submitting it again."""

from __future__ import annotations

import struct

import aiohttp
import openai
import orjson
import pytest

from services.runtime.topics import Topics
from tests.e2e.helpers import TopicTail

DEMO_KEY = "sk-llmgw-demo"


def mp4_seconds(data: bytes) -> float:
    """The duration an MP4's moov/mvhd declares (walking the boxes)."""

    def boxes(buf: bytes, start: int, end: int):
        i = start
        while i + 8 <= end:
            size, kind = struct.unpack(">I4s", buf[i : i + 8])
            yield kind, i + 8, i + size
            i += size

    for kind, body, end in boxes(data, 0, len(data)):
        if kind == b"moov":
            for k, b, _ in boxes(data, body, end):
                if k == b"mvhd":
                    version = data[b]
                    if version == 1:
                        timescale, duration = struct.unpack(">IQ", data[b + 20 : b + 32])
                    else:
                        timescale, duration = struct.unpack(">II", data[b + 12 : b + 20])
                    return duration / timescale
    raise AssertionError("no moov/mvhd")


@pytest.fixture
def aclient(edge_url) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=DEMO_KEY, base_url=f"{edge_url}/v1", max_retries=0, timeout=60)


async def test_a_video_job_through_the_openai_sdk(aclient, gw):
    video = await aclient.videos.create(model="demo-video", prompt="a kafka broker at dawn", seconds="4")
    assert video.object == "video" and video.status == "queued" and video.prompt == "a kafka broker at dawn"
    await gw.wait_job(video.id, timeout_s=60)
    done = await aclient.videos.retrieve(video.id)
    assert done.status == "completed" and done.progress == 100 and done.seconds == "4"
    content = await aclient.videos.download_content(video.id)
    data = content.read()
    assert data[4:8] == b"ftyp" and mp4_seconds(data) == pytest.approx(4.0)
    job = await gw.get_job(video.id)
    assert job.result.output.media.key.startswith("tenants/demo/media/")  # the gateway's own copy


async def test_a_synchronous_call_waits_for_the_asynchronous_provider(edge_url, gw, stack_settings):
    topics = Topics.load(stack_settings.topics_path, stack_settings.topic_prefix)
    async with (
        aiohttp.ClientSession(base_url=edge_url) as s,
        TopicTail(stack_settings.bootstrap_servers, topics.usage.name) as usage,
    ):
        async with s.post(
            "/v1/videos",
            json={"model": "demo-video", "prompt": "waited for", "seconds": "8"},
            headers={"authorization": f"Bearer {DEMO_KEY}", "x-llmgw-wait": "true"},
        ) as r:
            assert r.status == 200, await r.text()
            video = await r.json()
        assert video["status"] == "completed" and video["seconds"] == "8"
        rid = video["id"]
        [rec] = [
            orjson.loads(x.value)
            for x in await usage.until(lambda rs: any(rid.encode() in (x.value or b"") for x in rs))
            if rid.encode() in (x.value or b"")
        ]
    assert rec["units"]["video_seconds"] == 8 and rec["cost_usd"] == pytest.approx(0.8)
    result = await gw.generate_video("demo-video", "from the sdk", seconds="4", wait=True)
    data = await gw.media_bytes(result.output.media)
    assert mp4_seconds(data) == pytest.approx(4.0) and result.output.media.url


async def test_a_video_job_is_resumed_by_polling_after_its_executor_dies(
    gw, stack, emulator_url, stack_settings
):
    from tests.e2e.test_crash_safety import kill_and_restart, only_executor_0

    topics = Topics.load(stack_settings.topics_path, stack_settings.topic_prefix)
    async with (
        only_executor_0(stack),
        TopicTail(stack_settings.bootstrap_servers, topics.jobs.name) as states,
        aiohttp.ClientSession() as s,
    ):
        job_id = await gw.generate_video(
            "demo-video", "survives", seconds="4", emulator_scenario="video_ms=1500"
        )
        await states.until(
            lambda rs: any(
                r.key == f"demo/{job_id}".encode()
                and (orjson.loads(r.value).get("provider_job") or {}).get("id")
                for r in rs
                if r.value
            )
        )
        await kill_and_restart(stack, "executor-0")
        done = await gw.wait_job(job_id, timeout_s=60)
        assert done.status == "completed"
        async with s.get(f"{emulator_url}/_emulator/calls?kind=videos") as r:
            calls = [c for c in await r.json() if c["inputs"] == ["survives"]]
    assert len(calls) == 1  # submitted once: the second run polled the provider's job


async def test_the_videos_route_takes_the_gateway_fields_like_every_model_route(edge_url, gw, stack_settings):
    auth = {"authorization": f"Bearer {DEMO_KEY}"}
    topics = Topics.load(stack_settings.topics_path, stack_settings.topic_prefix)
    async with (
        aiohttp.ClientSession(base_url=edge_url) as s,
        TopicTail(stack_settings.bootstrap_servers, topics.requests.name) as requests,
    ):
        async with s.post(
            "/v1/videos", json={"model": "demo-video", "prompt": "x", "seconds": "5"}, headers=auth
        ) as r:
            assert r.status == 400 and (await r.json())["error"]["param"] == "seconds"
        rid = "videos-gateway-fields-1"
        body = {"model": "demo-video", "prompt": "named", "tenant_id": "restricted", "metadata": {"k": "v"}}
        async with s.post("/v1/videos", json=body, headers=auth | {"x-request-id": rid}) as r:
            assert r.status == 200 and (await r.json())["id"] == rid
        [event] = [
            orjson.loads(x.value)
            for x in await requests.until(
                lambda rs: any(x.key == b"demo" and rid.encode() in x.value for x in rs)
            )
            if rid.encode() in x.value
        ]
    assert event["tenant_id"] == "demo" and event["api_key"] == "demo key" and event["metadata"] == {"k": "v"}
    assert "tenant_id" not in event["extra"]  # identity comes from the key, never reaches a provider
    assert (await gw.wait_job(rid, timeout_s=60)).status == "completed"

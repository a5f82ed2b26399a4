"""The emulated OpenAI videos API: the job's life on a hand-driven clock, the MP4 it makes (parsed
box by box here, and by ``ffprobe`` when the machine has it), and the official ``openai`` SDK."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
from typing import Any

import openai
import pytest
from openai.types import Video
from PIL import Image

from services.emulator import job_scenario, mp4, video_synth
from services.emulator.scenario import ScenarioError

from .jobs_support import asgi_client, clocked_app, serve_app

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"dinf", b"stbl"}


def boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of each box in ``data[start:end]``, checking sizes."""
    end = len(data) if end is None else end
    out = []
    pos = start
    while pos < end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        assert size >= 8 and pos + size <= end, f"box {kind!r} at {pos} overruns its parent"
        out.append((kind, pos + 8, pos + size))
        pos += size
    assert pos == end
    return out


def tree(data: bytes, start: int = 0, end: int | None = None) -> dict[bytes, Any]:
    """Boxes by type (the last of a type wins); container boxes hold their children's tree."""
    found: dict[bytes, Any] = {}
    for kind, lo, hi in boxes(data, start, end):
        found[kind] = tree(data, lo, hi) if kind in CONTAINERS else (lo, hi)
    return found


def parse_mp4(data: bytes) -> dict[str, Any]:
    """What a container parser needs from the file, read independently of :mod:`.mp4`."""
    top = tree(data)
    assert list(top)[:2] == [b"ftyp", b"moov"] and b"mdat" in top
    lo, _ = top[b"ftyp"]
    assert data[lo : lo + 4] == b"isom"
    mvhd_lo, _ = top[b"moov"][b"mvhd"]
    version = data[mvhd_lo]
    assert version == 0
    timescale, duration = struct.unpack(">II", data[mvhd_lo + 12 : mvhd_lo + 20])
    trak = top[b"moov"][b"trak"]
    tkhd_lo, _ = trak[b"tkhd"]
    width, height = (v >> 16 for v in struct.unpack(">II", data[tkhd_lo + 76 : tkhd_lo + 84]))
    hdlr_lo, _ = trak[b"mdia"][b"hdlr"]
    stbl = trak[b"mdia"][b"minf"][b"stbl"]
    stsd_lo, stsd_hi = stbl[b"stsd"]
    (entry_count,) = struct.unpack(">I", data[stsd_lo + 4 : stsd_lo + 8])
    [(entry_kind, entry_lo, entry_hi)] = boxes(data, stsd_lo + 8, stsd_hi)
    entry_w, entry_h = struct.unpack(">HH", data[entry_lo + 24 : entry_lo + 28])
    [(esds_kind, esds_lo, _)] = boxes(data, entry_lo + 78, entry_hi)
    stts_lo, _ = stbl[b"stts"]
    (stts_n,) = struct.unpack(">I", data[stts_lo + 4 : stts_lo + 8])
    runs = [struct.unpack(">II", data[stts_lo + 8 + 8 * i : stts_lo + 16 + 8 * i]) for i in range(stts_n)]
    stsz_lo, _ = stbl[b"stsz"]
    fixed, count = struct.unpack(">II", data[stsz_lo + 4 : stsz_lo + 12])
    sizes = list(struct.unpack(f">{count}I", data[stsz_lo + 12 : stsz_lo + 12 + 4 * count]))
    stsc_lo, _ = stbl[b"stsc"]
    stsc = struct.unpack(">IIII", data[stsc_lo + 4 : stsc_lo + 20])  # entry_count, then one entry
    stco_lo, _ = stbl[b"stco"]
    n_chunks, offset = struct.unpack(">II", data[stco_lo + 4 : stco_lo + 12])
    mdat_lo, mdat_hi = top[b"mdat"]
    samples, pos = [], offset
    for size in sizes:
        samples.append(data[pos : pos + size])
        pos += size
    return {
        "timescale": timescale,
        "duration": duration,
        "width": width,
        "height": height,
        "handler": data[hdlr_lo + 8 : hdlr_lo + 12],
        "entries": entry_count,
        "entry": entry_kind,
        "entry_size": (entry_w, entry_h),
        "esds": esds_kind,
        "object_type": data[esds_lo + 4 + 5 + 3 + 5],  # fullbox header, ES_Descriptor, its fields, tag+len
        "stts": runs,
        "stsz_fixed": fixed,
        "sizes": sizes,
        "stsc": stsc,
        "chunks": n_chunks,
        "offset": offset,
        "mdat": (mdat_lo, mdat_hi),
        "samples": samples,
    }


# --- scenario keys ------------------------------------------------------------------------------


def test_split_takes_job_keys_out_of_model_and_header():
    rest, job, header = job_scenario.split("sora-emu@video_ms=2000,ttfb_ms=5", "video_fail_at=40,status=503")
    assert rest == "sora-emu@ttfb_ms=5"
    assert header == "status=503"
    assert (job.video_ms, job.video_fail_at, job.video_queue_ms) == (2000.0, 40, 100.0)
    rest, job, header = job_scenario.split("sora-emu@video_ms=1", "video_ms=7")
    assert (rest, job.video_ms, header) == ("sora-emu", 7.0, None)  # the header wins


@pytest.mark.parametrize(
    "spec",
    [
        "video_ms=-1",
        "video_ms=x",
        "video_fail_at=101",
        "batch_items_per_s=0",
        "video_typo=1",
        "batch_x=2",
        "video_poll_busy=-1",
        "video_retry_after_s=x",
    ],
)
def test_bad_job_values_are_errors_naming_the_key(spec):
    with pytest.raises(ScenarioError, match=spec.split("=")[0]):
        job_scenario.split(f"sora-emu@{spec}")


# --- the MP4 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "size"), [(4, (720, 1280)), (12, (1792, 1024))])
def test_mp4_is_a_valid_container_of_jpeg_frames(seconds, size):
    width, height = size
    data = video_synth.content("a calico cat", seconds, width, height)
    info = parse_mp4(data)
    frames = seconds * video_synth.FPS
    assert info["timescale"] == mp4.TIMESCALE and info["duration"] == seconds * 1000
    assert (info["width"], info["height"]) == size == info["entry_size"]
    assert info["handler"] == b"vide"
    assert (info["entries"], info["entry"], info["esds"], info["object_type"]) == (1, b"mp4v", b"esds", 0x6C)
    assert info["stts"] == [(frames, 1000 // video_synth.FPS)]
    assert sum(n * delta for n, delta in info["stts"]) == info["duration"]
    assert info["stsz_fixed"] == 0 and len(info["sizes"]) == frames
    assert info["stsc"] == (1, 1, frames, 1) and info["chunks"] == 1
    mdat_lo, mdat_hi = info["mdat"]
    assert info["offset"] == mdat_lo and mdat_lo + sum(info["sizes"]) == mdat_hi == len(data)
    pictures = []
    for sample in info["samples"]:
        assert sample[:2] == b"\xff\xd8" and sample[-2:] == b"\xff\xd9"
        picture = Image.open(io.BytesIO(sample))
        assert picture.format == "JPEG" and picture.size == size
        pictures.append(picture.convert("RGB").tobytes())
    assert len(set(pictures)) > 1  # the picture moves


def test_video_is_deterministic_per_prompt():
    one = video_synth.content("prompt one", 4, 720, 1280)
    assert video_synth.content.__wrapped__("prompt one", 4, 720, 1280) == one
    assert video_synth.content("prompt two", 4, 720, 1280) != one


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe is not installed")
def test_ffprobe_reads_the_mp4(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(video_synth.content("ffprobe", 8, 1280, 720))
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    probe = json.loads(out.stdout)
    [stream] = probe["streams"]
    assert stream["codec_name"] == "mjpeg" and (stream["width"], stream["height"]) == (1280, 720)
    assert int(stream["nb_read_frames"]) == 8 * video_synth.FPS
    assert float(probe["format"]["duration"]) == pytest.approx(8.0)


def test_mp4_refuses_no_frames():
    with pytest.raises(ValueError):
        mp4.jpeg_movie([], 500, 16, 16)


# --- the job's life -----------------------------------------------------------------------------


async def test_job_goes_queued_in_progress_completed_then_expires():
    app, clock = clocked_app()
    async with asgi_client(app) as client:
        r = await client.post(
            "/v1/videos",
            json={
                "model": "sora-emu@video_ms=1000,video_queue_ms=500,video_expire_s=60",
                "prompt": "a cat",
                "seconds": "4",
            },
        )
        assert r.status_code == 200
        video = r.json()
        assert video["object"] == "video" and video["id"].startswith("video_")
        assert (video["status"], video["progress"], video["model"]) == ("queued", 0, "sora-emu")
        assert (video["seconds"], video["size"], video["prompt"]) == ("4", "720x1280", "a cat")
        assert video["completed_at"] is None and video["expires_at"] is None and video["error"] is None
        url = f"/v1/videos/{video['id']}"

        async def at(seconds: float) -> dict[str, Any]:
            clock.now = 1000.0 + seconds
            return (await client.get(url)).json()

        assert (await at(0.49))["status"] == "queued"
        assert [(v["status"], v["progress"]) for v in [await at(0.5), await at(1.5), await at(3.5)]] == [
            ("in_progress", 0),
            ("in_progress", 25),
            ("in_progress", 75),
        ]
        assert (await client.get(f"{url}/content")).status_code == 404  # not ready
        done = await at(4.5)
        assert (done["status"], done["progress"]) == ("completed", 100)
        assert done["expires_at"] == done["completed_at"] + 60
        assert (
            done["completed_at"] == video["created_at"] + 4 or done["completed_at"] == video["created_at"] + 5
        )
        r = await client.get(f"{url}/content")
        assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
        assert parse_mp4(r.content)["duration"] == 4000
        thumb = await client.get(f"{url}/content", params={"variant": "thumbnail"})
        assert Image.open(io.BytesIO(thumb.content)).format == "WEBP"
        sheet = await client.get(f"{url}/content", params={"variant": "spritesheet"})
        assert Image.open(io.BytesIO(sheet.content)).format == "JPEG"
        assert (await client.get(f"{url}/content", params={"variant": "gif"})).status_code == 400
        await at(4.5 + 60)
        gone = await client.get(f"{url}/content")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "video_expired"
        assert (await client.get(url)).json()["status"] == "completed"  # the job itself stays


async def test_polls_are_counted_and_carry_the_scenarios_retry_after():
    app, clock = clocked_app()
    async with asgi_client(app) as client:
        model = "sora-emu@video_ms=1000,video_retry_after_s=2,video_poll_busy=2"
        video = (await client.post("/v1/videos", json={"model": model, "prompt": "hinted"})).json()
        url = f"/v1/videos/{video['id']}"
        first, second = await client.get(url), await client.get(url)
        assert [first.status_code, second.status_code] == [429, 429]
        assert first.headers["retry-after"] == "2" and first.json()["error"]["code"] == "rate_limit_exceeded"
        clock.advance(0.5)
        third = await client.get(url)
        assert third.status_code == 200 and third.headers["retry-after"] == "2"
        assert third.json()["status"] == "in_progress"
        counted = (await client.get(f"/_emulator/videos/{video['id']}")).json()
        assert counted == {"id": video["id"], "polls": 3, "at": [1000.0, 1000.0, 1000.5]}
        dated = "sora-emu@video_retry_after_s=1.5,video_retry_after_date=1"
        other = (await client.post("/v1/videos", json={"model": dated, "prompt": "dated"})).json()
        hint = (await client.get(f"/v1/videos/{other['id']}")).headers["retry-after"]
        assert hint.endswith(" GMT")  # an HTTP date, 2 s ahead (whole seconds)
        plain = (await client.post("/v1/videos", json={"model": "sora-emu", "prompt": "plain"})).json()
        assert "retry-after" not in (await client.get(f"/v1/videos/{plain['id']}")).headers
        assert (await client.get("/_emulator/videos/video_nope")).status_code == 404


async def test_failure_scenario_stops_at_the_given_progress():
    app, clock = clocked_app()
    async with asgi_client(app) as client:
        video = (
            await client.post(
                "/v1/videos", json={"model": "sora-emu@video_fail_at=30,video_queue_ms=0", "prompt": "x"}
            )
        ).json()
        url = f"/v1/videos/{video['id']}"
        clock.advance(0.25 * 4 * 0.29)
        assert (await client.get(url)).json()["status"] == "in_progress"
        clock.advance(10)
        failed = (await client.get(url)).json()
        assert (failed["status"], failed["progress"]) == ("failed", 30)
        assert failed["error"]["code"] == "video_generation_failed" and failed["error"]["message"]
        assert failed["completed_at"] is not None and failed["expires_at"] is None
        assert (await client.get(f"{url}/content")).status_code == 404
        deleted = await client.delete(url)
        assert deleted.json() == {"id": video["id"], "object": "video.deleted", "deleted": True}
        assert (await client.get(url)).status_code == 404


async def test_multipart_create_header_scenario_and_list_delete_remix():
    app, clock = clocked_app()
    async with asgi_client(app) as client:
        r = await client.post(
            "/v1/videos",
            data={"model": "sora-2", "prompt": "multipart", "seconds": "8", "size": "1792x1024"},
            files={"input_reference": ("ref.png", b"\x89PNG...", "image/png")},
            headers={"x-emulator-scenario": "video_ms=100"},
        )
        first = r.json()
        assert (first["seconds"], first["size"], first["model"]) == ("8", "1792x1024", "sora-2")
        second = (await client.post("/v1/videos", json={"prompt": "json default"})).json()
        assert (second["model"], second["seconds"], second["size"]) == ("sora-2", "4", "720x1280")
        assert (await client.delete(f"/v1/videos/{second['id']}")).status_code == 400  # still queued
        listed = (await client.get("/v1/videos")).json()
        assert [v["id"] for v in listed["data"]] == [second["id"], first["id"]]
        assert listed["object"] == "list" and listed["has_more"] is False
        assert listed["first_id"] == second["id"] and listed["last_id"] == first["id"]
        page = (await client.get("/v1/videos", params={"limit": 1, "order": "asc"})).json()
        assert [v["id"] for v in page["data"]] == [first["id"]] and page["has_more"] is True
        after = (await client.get("/v1/videos", params={"after": second["id"]})).json()
        assert [v["id"] for v in after["data"]] == [first["id"]]
        clock.advance(0.1 + 8 * 0.1)
        assert (await client.get(f"/v1/videos/{first['id']}")).json()["status"] == "completed"
        assert (await client.get(f"/v1/videos/{second['id']}")).json()["status"] == "in_progress"
        remix = (await client.post(f"/v1/videos/{first['id']}/remix", json={"prompt": "again"})).json()
        assert remix["remixed_from_video_id"] == first["id"] and remix["status"] == "queued"
        assert (remix["seconds"], remix["size"], remix["prompt"]) == ("8", "1792x1024", "again")
        refused = await client.post(f"/v1/videos/{second['id']}/remix", json={"prompt": "no"})
        assert refused.status_code == 400
        calls = (await client.get("/_emulator/calls")).json()
        assert [c["inputs"] for c in calls if c["kind"] == "videos"] == [
            ["multipart"],
            ["json default"],
            ["again"],
        ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x", "seconds": "5"}, "seconds"),
        ({"prompt": "x", "size": "640x480"}, "size"),
        ({"prompt": "x", "model": "sora@video_ms=-3"}, "model"),
        ({"prompt": "x", "model": "sora@nonsense=1"}, "model"),
        ({"prompt": "x", "input_reference": {"image_url": "a", "file_id": "b"}}, "input_reference"),
    ],
)
async def test_invalid_creates_are_400s(body, param):
    app, _ = clocked_app()
    async with asgi_client(app) as client:
        r = await client.post("/v1/videos", json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param
        assert (await client.get("/v1/videos")).json()["data"] == []


async def test_request_scenario_applies_to_the_create_call():
    app, _ = clocked_app()
    async with asgi_client(app) as client:
        r = await client.post(
            "/v1/videos", json={"model": "sora-emu@status=429,retry_after_ms=1500", "prompt": "x"}
        )
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        assert (await client.get("/v1/videos")).json()["data"] == []
        assert (await client.get("/v1/videos/video_nope")).status_code == 404


# --- the official SDK ---------------------------------------------------------------------------


def test_openai_sdk_create_retrieve_download_list_delete():
    app, clock = clocked_app()
    with serve_app(app) as url, openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client:
        video = client.videos.create(
            model="sora-emu@video_ms=500", prompt="sdk cat", seconds="4", size="1280x720"
        )
        assert isinstance(video, Video) and video.status == "queued" and video.progress == 0
        clock.advance(0.1 + 1.0)
        polled = client.videos.retrieve(video.id)
        assert (polled.status, polled.progress) == ("in_progress", 50)
        clock.advance(1.0)
        done = client.videos.retrieve(video.id)
        assert done.status == "completed" and done.expires_at is not None and done.error is None
        content = client.videos.download_content(video.id)
        info = parse_mp4(content.read())
        assert (info["duration"], info["width"], info["height"]) == (4000, 1280, 720)
        thumb = client.videos.download_content(video.id, variant="thumbnail").read()
        assert Image.open(io.BytesIO(thumb)).size == (1280, 720)
        assert [v.id for v in client.videos.list()] == [video.id]
        deleted = client.videos.delete(video.id)
        assert deleted.deleted is True and deleted.id == video.id
        with pytest.raises(openai.NotFoundError):
            client.videos.retrieve(video.id)
        with pytest.raises(openai.BadRequestError):
            client.videos.create(prompt="x", seconds="5")

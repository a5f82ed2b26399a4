"""Media through the whole stack (edge, router, media-store, executor, S3, emulator), with the
official ``openai`` SDK: vision, documents and audio parts for every chat wire format that has
them, files, image generation, text-to-speech and speech-to-text, the claim check, tenant
isolation, and the safe fetcher at the entry point (README "Media")."""

from __future__ import annotations

import asyncio
import base64
import io
import wave

import aiohttp
import openai
import orjson
import pytest
from PIL import Image

from services.runtime.topics import Topics
from tests.e2e.helpers import TopicTail
from tests.unit.edge.openai_spec import check

DEMO_KEY = "sk-llmgw-demo"
RESTRICTED_KEY = "sk-llmgw-restricted"
VISION = ["demo-openai", "demo-anthropic", "demo-ollama", "demo-gemini"]


def png(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def noise_png(target_bytes: int) -> bytes:
    """A PNG of random pixels (incompressible) of about ``target_bytes``."""
    import os

    side = int((target_bytes / 3) ** 0.5) + 1
    img = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def pdf(text: str) -> bytes:
    """A one-page PDF whose text layer is ``text`` (built by hand: pypdf extracts it)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def data_url(mime: str, body: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(body).decode()}"


@pytest.fixture
def aclient(edge_url) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=DEMO_KEY, base_url=f"{edge_url}/v1", max_retries=0, timeout=60)


@pytest.fixture
def restricted(edge_url) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=RESTRICTED_KEY, base_url=f"{edge_url}/v1", max_retries=0, timeout=60)


def image_message(*urls: str, text: str = "what is in these images?") -> list[dict]:
    parts: list[dict] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": u, "detail": "high"}} for u in urls]
    return [{"role": "user", "content": parts}]


# --- vision -------------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", VISION)
async def test_images_reach_every_vision_provider_as_bytes(aclient, alias):
    a, b = png(64, 48), png(32, 32, (0, 90, 200))
    done = await aclient.chat.completions.create(
        model=alias,
        messages=image_message(data_url("image/png", a), data_url("image/png", b)),
        max_tokens=200,
    )
    text = done.choices[0].message.content or ""
    assert f"image/png {len(a)} bytes" in text and f"image/png {len(b)} bytes" in text


class Origin:
    """A loopback HTTP server the tests control: what it serves, and every request it got."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.hits: list[str] = []
        self.connections = 0

    async def __aenter__(self) -> Origin:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                self.hits.append(path)
                status, headers, body = self.routes.get(path.split("?")[0], (404, {}, b"no"))
                lines = [f"HTTP/1.1 {status} X", f"content-length: {len(body)}", "connection: close"]
                lines += [f"{k}: {v}" for k, v in headers.items()]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
                await writer.drain()
            finally:
                writer.close()

        self.server = await asyncio.start_server(on_connect, self.host, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()


async def test_an_image_url_is_fetched_checked_and_sent_as_bytes(aclient):
    body = png(40, 40)
    async with Origin() as origin:
        origin.routes["/cat.png"] = (200, {"content-type": "image/png"}, body)
        done = await aclient.chat.completions.create(
            model="demo-anthropic",
            messages=image_message(origin.url("/cat.png?X-Amz-Signature=s3cr3t")),
            max_tokens=200,
        )
    assert f"image/png {len(body)} bytes" in (done.choices[0].message.content or "")
    assert origin.hits == ["/cat.png?X-Amz-Signature=s3cr3t"]


async def test_an_html_page_served_as_png_is_refused(aclient):
    async with Origin() as origin:
        origin.routes["/error.png"] = (
            200,
            {"content-type": "image/png"},
            b"<!doctype html><html>oops</html>",
        )
        with pytest.raises(openai.BadRequestError) as info:
            await aclient.chat.completions.create(
                model="demo-openai", messages=image_message(origin.url("/error.png")), max_tokens=50
            )
    err = info.value.body
    assert err["code"] == "validation_error" and "text/html" in err["message"]


@pytest.mark.parametrize(
    "host",
    ["127.0.0.2", "169.254.169.254", "10.1.2.3", "[::ffff:127.0.0.2]"],
)
async def test_private_addresses_are_refused_with_no_connection(aclient, host):
    async with Origin("127.0.0.2") as listener:
        url = f"http://{host}:{listener.port}/x.png?X-Amz-Signature=s3cr3t"
        with pytest.raises(openai.BadRequestError) as info:
            await aclient.chat.completions.create(
                model="demo-openai", messages=image_message(url), max_tokens=50
            )
        assert listener.connections == 0
    err = info.value.body
    assert err["code"] == "validation_error" and "s3cr3t" not in err["message"]
    assert "<redacted>" in err["message"] or "?" not in err["message"]


async def test_a_redirect_to_a_private_address_is_refused(aclient):
    async with Origin("127.0.0.2") as private, Origin() as origin:
        private.routes["/x.png"] = (200, {"content-type": "image/png"}, png())
        origin.routes["/go"] = (302, {"location": f"http://127.0.0.2:{private.port}/x.png"}, b"")
        with pytest.raises(openai.BadRequestError) as info:
            await aclient.chat.completions.create(
                model="demo-openai", messages=image_message(origin.url("/go")), max_tokens=50
            )
        assert private.connections == 0 and origin.hits == ["/go"]
    assert info.value.body["code"] == "validation_error"


# --- files, documents, claim check, tenants ---------------------------------------------------------


async def test_files_api_round_trip(aclient):
    body = pdf("Quarterly report")
    created = await aclient.files.create(file=("report.pdf", body, "application/pdf"), purpose="user_data")
    check("OpenAIFile", created.model_dump(exclude_none=True))
    assert created.bytes == len(body) and created.filename == "report.pdf"
    got = await aclient.files.retrieve(created.id)
    assert got.id == created.id
    content = await aclient.files.content(created.id)
    assert content.read() == body
    listed = [f.id async for f in aclient.files.list()]
    assert created.id in listed
    deleted = await aclient.files.delete(created.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        await aclient.files.retrieve(created.id)


@pytest.mark.parametrize("alias", ["demo-openai", "demo-anthropic", "demo-gemini"])
async def test_a_pdf_reaches_native_document_providers(aclient, alias):
    body = pdf("The launch code is tangerine")
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "summarise"},
                {
                    "type": "file",
                    "file": {"filename": "memo.pdf", "file_data": data_url("application/pdf", body)},
                },
            ],
        }
    ]
    done = await aclient.chat.completions.create(model=alias, messages=messages, max_tokens=200)
    assert f"application/pdf {len(body)} bytes" in (done.choices[0].message.content or "")


async def test_a_pdf_is_extracted_for_a_model_without_documents(aclient, emulator_url):
    body = pdf("The launch code is tangerine")
    created = await aclient.files.create(file=("memo.pdf", body, "application/pdf"), purpose="user_data")
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "repeat"},
                {"type": "file", "file": {"file_id": created.id}},
            ],
        }
    ]
    done = await aclient.chat.completions.create(model="demo-ollama-docs", messages=messages, max_tokens=200)
    assert done.choices[0].message.content
    async with aiohttp.ClientSession() as s, s.get(f"{emulator_url}/_emulator/calls?kind=chat") as r:
        calls = await r.json()
    sent = [c for c in calls if c["model"] == "llava-emu"][-1]
    assert "memo.pdf" in sent["inputs"][0] and "The launch code is tangerine" in sent["inputs"][0]
    assert not sent.get("media")  # text only: no PDF reached the provider
    with pytest.raises(openai.BadRequestError) as info:
        await aclient.chat.completions.create(model="demo-ollama", messages=messages, max_tokens=20)
    assert info.value.body["code"] == "capability_not_supported"


async def test_another_tenants_file_is_not_found(aclient, restricted):
    created = await aclient.files.create(file=("a.png", png(), "image/png"), purpose="vision")
    with pytest.raises(openai.NotFoundError):
        await restricted.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        await restricted.files.content(created.id)
    with pytest.raises(openai.NotFoundError) as info:
        await restricted.chat.completions.create(
            model="demo-openai",
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": created.id}}]}],
            max_tokens=20,
        )
    assert info.value.body["code"] == "media_not_found"


async def test_a_20_mb_image_travels_as_a_claim_check(aclient, stack_settings):
    big = noise_png(20 * 1024 * 1024)
    created = await aclient.files.create(file=("big.png", big, "image/png"), purpose="vision")
    topics = Topics.load(stack_settings.topics_path, stack_settings.topic_prefix)
    async with TopicTail(stack_settings.bootstrap_servers, topics.exec.name) as plans:
        done = await aclient.chat.completions.create(
            model="demo-openai", messages=image_message(created.id), max_tokens=100
        )
        assert f"image/png {len(big)} bytes" in (done.choices[0].message.content or "")
        await plans.until(lambda rs: any(b"image_url" in (r.value or b"") for r in rs))
    for r in plans.records:
        assert len(r.value or b"") < 256 * 1024 + 64 * 1024  # never the bytes, only the reference


# --- image generation, speech, transcription ------------------------------------------------------


async def test_image_generation_returns_a_presigned_url_pillow_opens(aclient):
    raw = await aclient.images.with_raw_response.generate(
        model="demo-image", prompt="a red kafka", n=2, size="256x256"
    )
    check("ImagesResponse", raw.http_response.json())
    images = raw.parse()
    assert len(images.data) == 2
    async with aiohttp.ClientSession() as s:
        for item in images.data:
            assert item.url and "X-Amz-Signature" in item.url
            async with s.get(item.url) as r:
                body = await r.read()
            assert Image.open(io.BytesIO(body)).size == (256, 256)


async def test_image_generation_b64_json(aclient):
    images = await aclient.images.generate(
        model="demo-image", prompt="a blue broker", response_format="b64_json", size="128x128"
    )
    img = Image.open(io.BytesIO(base64.b64decode(images.data[0].b64_json or "")))
    assert img.format == "PNG" and img.size == (128, 128)


async def test_speech_whole_answer_is_a_wav_with_its_stored_url(aclient):
    raw = await aclient.audio.speech.with_raw_response.create(
        model="demo-tts", voice="alloy", input="hello from the gateway", response_format="wav"
    )
    body = raw.content
    with wave.open(io.BytesIO(body)) as w:
        assert w.getnframes() > 0
    url = raw.headers["x-llmgw-media-url"]
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert await r.read() == body


async def test_speech_streams_as_audio_and_as_sse(aclient):
    async with aclient.audio.speech.with_streaming_response.create(
        model="demo-tts", voice="alloy", input="streamed speech", response_format="pcm"
    ) as resp:
        chunks = [c async for c in resp.iter_bytes()]
    assert sum(len(c) for c in chunks) > 0
    async with aclient.audio.speech.with_streaming_response.create(
        model="demo-tts", voice="alloy", input="streamed speech", response_format="pcm", stream_format="sse"
    ) as resp:
        lines = [ln async for ln in resp.iter_lines()]
    events = [orjson.loads(ln[6:]) for ln in lines if ln.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["total_tokens"] >= 0
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert len(audio) == sum(len(c) for c in chunks)


@pytest.mark.parametrize("fmt", ["json", "text", "srt", "verbose_json", "vtt"])
async def test_speech_round_trips_through_transcription(aclient, fmt):
    said = "the quick brown fox"
    audio = (
        await aclient.audio.speech.create(model="demo-tts", voice="alloy", input=said, response_format="wav")
    ).content
    got = await aclient.audio.transcriptions.create(
        model="demo-stt", file=("said.wav", audio, "audio/wav"), response_format=fmt
    )
    text = got if isinstance(got, str) else got.text
    assert said in text


def mp4(seconds: float = 3.0, payload: int = 4096) -> bytes:
    """A minimal MP4 container: ftyp, moov/mvhd (its duration) and an mdat of ``payload`` bytes."""
    import struct

    def box(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", 8 + len(body)) + kind + body

    mvhd = struct.pack(">B3xIIII", 0, 0, 0, 1000, int(seconds * 1000)) + b"\x00" * 80
    return (
        box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2mp41")
        + box(b"moov", box(b"mvhd", mvhd))
        + box(b"mdat", b"\x00" * payload)
    )


async def test_input_audio_reaches_audio_capable_chat_models(aclient):
    audio = (
        await aclient.audio.speech.create(model="demo-tts", voice="alloy", input="hi", response_format="wav")
    ).content
    for alias in ("demo-audio", "demo-gemini"):
        done = await aclient.chat.completions.create(
            model=alias,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what was said?"},
                        {
                            "type": "input_audio",
                            "input_audio": {"data": base64.b64encode(audio).decode(), "format": "wav"},
                        },
                    ],
                }
            ],
            max_tokens=100,
        )
        assert f"audio/wav {len(audio)} bytes" in (done.choices[0].message.content or "")


async def test_video_understanding_through_gemini_by_file_id(aclient):
    video = mp4(payload=300_000)  # above the inline limit: a claim check all the way
    created = await aclient.files.create(file=("clip.mp4", video, "video/mp4"), purpose="user_data")
    done = await aclient.chat.completions.create(
        model="demo-gemini",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "describe"},
                    {"type": "video_url", "video_url": {"url": created.id}},
                ],
            }
        ],
        max_tokens=100,
    )
    assert f"video/mp4 {len(video)} bytes" in (done.choices[0].message.content or "")
    with pytest.raises(openai.BadRequestError) as info:
        await aclient.chat.completions.create(
            model="demo-openai",
            messages=[{"role": "user", "content": [{"type": "video_url", "video_url": {"url": created.id}}]}],
            max_tokens=20,
        )
    assert info.value.body["code"] == "capability_not_supported"


async def test_media_usage_is_billed_per_unit(aclient, stack_settings):
    topics = Topics.load(stack_settings.topics_path, stack_settings.topic_prefix)
    async with TopicTail(stack_settings.bootstrap_servers, topics.usage.name) as usage:
        img = await aclient.images.with_raw_response.generate(
            model="demo-image", prompt="units", n=3, size="64x64"
        )
        said = "twenty-one characters"
        speech = await aclient.audio.speech.with_raw_response.create(
            model="demo-tts", voice="alloy", input=said, response_format="wav"
        )
        ids = {img.headers["x-request-id"], speech.headers["x-request-id"]}
        records = await usage.until(
            lambda rs: ids <= {orjson.loads(r.value)["request_id"] for r in rs}, timeout=30
        )
    by_id = {u["request_id"]: u for u in map(lambda r: orjson.loads(r.value), records)}
    image_usage = by_id[img.headers["x-request-id"]]
    assert image_usage["units"]["images"] == 3 and image_usage["cost_usd"] == pytest.approx(0.12)
    speech_usage = by_id[speech.headers["x-request-id"]]
    assert speech_usage["units"]["characters"] == len(said)
    assert speech_usage["cost_usd"] == pytest.approx(len(said) * 0.000015)


async def test_a_large_data_url_is_claim_checked_at_the_edge(aclient, stack_settings):
    big = noise_png(1024 * 1024)
    topics = Topics.load(stack_settings.topics_path, stack_settings.topic_prefix)
    async with TopicTail(stack_settings.bootstrap_servers, topics.requests.name) as requests:
        raw = await aclient.chat.completions.with_raw_response.create(
            model="demo-gemini", messages=image_message(data_url("image/png", big)), max_tokens=100
        )
        rid = raw.headers["x-request-id"]
        got = await requests.until(lambda rs: any(rid.encode() in (r.value or b"") for r in rs))
    assert f"image/png {len(big)} bytes" in (raw.parse().choices[0].message.content or "")
    event = next(r for r in got if rid.encode() in (r.value or b""))
    assert len(event.value or b"") < 64 * 1024  # the megabyte went to S3; the event names it


async def test_entry_points_other_than_image_parts_use_the_safe_fetcher(aclient):
    async with Origin("127.0.0.2") as listener:
        private = f"http://127.0.0.2:{listener.port}/a"
        with pytest.raises(openai.BadRequestError) as doc:
            await aclient.chat.completions.create(
                model="demo-anthropic",
                messages=[{"role": "user", "content": [{"type": "file", "file": {"url": private + ".pdf"}}]}],
                max_tokens=20,
            )
        with pytest.raises(openai.BadRequestError) as stt:
            await aclient.post(
                "/audio/transcriptions",
                body={"model": "demo-stt", "file": private + ".wav"},
                cast_to=object,
            )
        assert listener.connections == 0
    assert doc.value.body["code"] == "validation_error" and stt.value.body["code"] == "validation_error"


async def test_the_media_store_restarts_alone_and_serves_on(aclient, stack):
    import os
    import signal

    pid = next(c for c in stack.load() if c.name == "media-store").pid
    assert pid
    os.kill(pid, signal.SIGKILL)
    await asyncio.to_thread(stack.restart, "media-store")
    body = png(16, 16)
    done = await aclient.chat.completions.create(
        model="demo-openai", messages=image_message(data_url("image/png", body)), max_tokens=50
    )
    assert f"image/png {len(body)} bytes" in (done.choices[0].message.content or "")


async def test_a_large_video_goes_to_geminis_files_api_not_inline(aclient, emulator_url):
    video = mp4(seconds=12, payload=19 * 1024 * 1024)  # past the adapter's 18 MiB inline budget
    created = await aclient.files.create(file=("long.mp4", video, "video/mp4"), purpose="user_data")
    done = await aclient.chat.completions.create(
        model="demo-gemini",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "describe"},
                    {"type": "video_url", "video_url": {"url": created.id}},
                ],
            }
        ],
        max_tokens=100,
    )
    assert f"video/mp4 {len(video)} bytes" in (done.choices[0].message.content or "")
    async with aiohttp.ClientSession() as s, s.get(f"{emulator_url}/v1beta/files?pageSize=100") as r:
        files = (await r.json()).get("files", [])
    assert any(int(f["sizeBytes"]) == len(video) and f["mimeType"] == "video/mp4" for f in files)


async def test_the_python_sdk_speaks_every_media_operation(gw, stack_settings):
    images = await gw.generate_image("demo-image", "a green topic", n=1, size="96x64")
    [image] = images.output.data
    assert Image.open(io.BytesIO(await gw.media_bytes(image.media))).size == (96, 64)
    assert image.media.url and image.media.key and image.media.key.startswith("tenants/demo/media/")
    spoken = await gw.speech("demo-tts", "sdk speech round trip", "alloy", response_format="wav")
    audio = await gw.media_bytes(spoken.output.media)
    with wave.open(io.BytesIO(audio)) as w:
        assert w.getnframes() > 0
    streamed = b"".join(
        [
            c
            async for c in gw.stream_speech(
                "demo-tts", "sdk speech round trip", "alloy", response_format="pcm"
            )
        ]
    )
    assert len(streamed) > 0
    heard = await gw.transcribe("demo-stt", audio, filename="said.wav", mime_type="audio/wav")
    assert "sdk speech round trip" in heard.output.text
    assert heard.usage is not None and heard.usage.units["audio_seconds"] > 0
    # billed per second at the deployment's per-unit price
    topics = Topics.load(stack_settings.topics_path, stack_settings.topic_prefix)
    async with TopicTail(stack_settings.bootstrap_servers, topics.usage.name) as usage:
        again = await gw.transcribe("demo-stt", audio, filename="said.wav", mime_type="audio/wav")
        [rec] = [
            orjson.loads(r.value)
            for r in await usage.until(
                lambda rs: any(again.request_id.encode() in (r.value or b"") for r in rs)
            )
            if again.request_id.encode() in (r.value or b"")
        ]
    seconds = rec["units"]["audio_seconds"]
    assert seconds > 0 and rec["cost_usd"] == pytest.approx(seconds * 0.0001)

"""The media-store's handlers with FileStorage in memory and a fake fetcher: what a resolved plan
carries, what is stored, what is refused, and how generated media is kept and answered."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from services.contracts.errors import MediaNotFound, ValidationError
from services.contracts.events import (
    ChatRequested,
    Deployment,
    ExecutionPlanned,
    GeneratedImage,
    ImagesOutput,
    MediaProduced,
    MediaRef,
    ResultProduced,
    TranscribeRequested,
)
from services.media_store.outputs import Outputs
from services.media_store.resolve import Resolver, media_id_for
from services.runtime.config import load_config
from services.runtime.media.fetch import Fetched
from services.runtime.media.refs import file_key, media_key, staging_key
from services.runtime.media.storage import MemoryFileStorage

ROOT = Path(__file__).resolve().parents[3]


def png(w: int = 20, h: int = 10) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


def wav() -> bytes:
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 8000)
    return buf.getvalue()


class FakeFetcher:
    def __init__(self, answers: dict[str, tuple[str | None, bytes]]):
        self.answers = answers
        self.fetched: list[str] = []

    async def fetch(self, url: str) -> Fetched:
        self.fetched.append(url)
        ctype, body = self.answers[url]
        return Fetched(
            body=body, content_type=ctype, url=url.split("?")[0] + ("?<redacted>" if "?" in url else "")
        )

    async def aclose(self) -> None:
        pass


@pytest.fixture
def config():
    return load_config(ROOT / "config" / "demo.yaml", {})


@pytest.fixture
async def storage():
    s = MemoryFileStorage("llmgw-media")
    await s.start()
    return s


def chat_plan(parts: list[dict], alias: str = "demo-openai", tenant: str = "demo") -> ExecutionPlanned:
    req = ChatRequested(
        request_id="r1", tenant_id=tenant, model=alias, messages=[{"role": "user", "content": parts}]
    )
    return ExecutionPlanned(
        request_id="r1",
        tenant_id=tenant,
        request=req,
        deployments=[Deployment(alias=alias, provider="emulator-openai", upstream_model="gpt-emu")],
    )


def data_url(mime: str, body: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(body).decode()}"


async def test_a_data_url_image_is_stored_and_referenced(config, storage):
    body = png()
    plan = chat_plan(
        [
            {"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": data_url("image/png", body), "detail": "low"}},
        ]
    )
    out = await Resolver(config, storage, FakeFetcher({})).plan(plan)
    part = out.request.messages[0].content[1]
    ref = MediaRef.model_validate(part["media"])
    assert ref.mime_type == "image/png" and ref.bytes == len(body) and (ref.width, ref.height) == (20, 10)
    assert ref.key == media_key("demo", media_id_for("r1", 0))
    assert await storage.get(ref.key) == body
    assert base64.b64decode(ref.data or "") == body  # small: inline as well
    assert part["image_url"] == {"url": f"s3://llmgw-media/{ref.key}", "detail": "low"}  # no data URL left
    assert out.request.messages[0].content[0] == {"type": "text", "text": "hi"}


async def test_large_media_travels_by_reference_only(config, storage):
    cfg = config.model_copy(update={"media": config.media.model_copy(update={"inline_max_bytes": 100})})
    body = png(200, 200)
    plan = chat_plan([{"type": "image_url", "image_url": {"url": data_url("image/png", body)}}])
    out = await Resolver(cfg, storage, FakeFetcher({})).plan(plan)
    ref = MediaRef.model_validate(out.request.messages[0].content[0]["media"])
    assert ref.data is None and ref.key is not None and await storage.get(ref.key) == body
    assert (
        body not in out.model_dump_json().encode()
        and base64.b64encode(body) not in out.model_dump_json().encode()
    )


async def test_an_url_goes_through_the_fetcher_and_its_query_is_redacted(config, storage):
    body = png()
    url = "https://img.example/cat.png?X-Amz-Signature=secret"
    fetcher = FakeFetcher({url: ("image/png", body)})
    out = await Resolver(config, storage, fetcher).plan(
        chat_plan([{"type": "image_url", "image_url": {"url": url}}])
    )
    ref = MediaRef.model_validate(out.request.messages[0].content[0]["media"])
    assert fetcher.fetched == [url] and ref.bytes == len(body)
    assert "secret" not in (ref.source or "") and "secret" not in str(await storage.head(ref.key))
    assert "pass_url" not in out.request.messages[0].content[0]  # demo-openai does not pass URLs


async def test_html_declared_as_png_is_refused_naming_the_part(config, storage):
    url = "https://img.example/error.png"
    fetcher = FakeFetcher({url: ("image/png", b"<!DOCTYPE html><html><body>404</body></html>")})
    plan = chat_plan([{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": url}}])
    with pytest.raises(ValidationError) as info:
        await Resolver(config, storage, fetcher).plan(plan)
    assert info.value.param == "messages[0].content[1]" and "text/html" in info.value.message
    assert await storage.keys("tenants/") == []  # nothing stored


async def test_a_file_id_resolves_only_for_its_tenant(config, storage):
    body = png()
    await storage.put(file_key("demo", "file-" + "a" * 32), body, "image/png", filename="a.png")
    part = {"type": "image_url", "image_url": {"url": "file-" + "a" * 32}}
    out = await Resolver(config, storage, FakeFetcher({})).plan(chat_plan([part]))
    ref = MediaRef.model_validate(out.request.messages[0].content[0]["media"])
    assert ref.key == file_key("demo", "file-" + "a" * 32) and ref.filename == "a.png"
    with pytest.raises(MediaNotFound):
        await Resolver(config, storage, FakeFetcher({})).plan(chat_plan([part], tenant="restricted"))
    other = {
        "type": "image_url",
        "image_url": {"url": f"s3://llmgw-media/{file_key('demo', 'file-' + 'a' * 32)}"},
    }
    with pytest.raises(MediaNotFound):
        await Resolver(config, storage, FakeFetcher({})).plan(chat_plan([other], tenant="restricted"))


async def test_input_audio_and_transcription_files(config, storage):
    audio = wav()
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(audio).decode(), "format": "wav"}}
    out = await Resolver(config, storage, FakeFetcher({})).plan(chat_plan([part], alias="demo-audio"))
    got = out.request.messages[0].content[0]
    assert "data" not in got["input_audio"] and got["input_audio"]["format"] == "wav"
    ref = MediaRef.model_validate(got["media"])
    assert ref.mime_type == "audio/wav" and ref.duration_s == pytest.approx(1.0)

    req = TranscribeRequested(
        request_id="r2", tenant_id="demo", model="demo-stt", file={"url": data_url("audio/wav", audio)}
    )
    plan = ExecutionPlanned(
        request_id="r2",
        tenant_id="demo",
        request=req,
        deployments=[Deployment(alias="demo-stt", provider="emulator-openai", upstream_model="whisper-emu")],
    )
    out2 = await Resolver(config, storage, FakeFetcher({})).plan(plan)
    f = out2.request.file
    assert f.media is not None and f.media.duration_s == pytest.approx(1.0) and f.url.startswith("s3://")


async def test_generated_media_is_kept_presigned_and_staging_removed(config, storage):
    small = png()
    big = png(300, 300)
    media = config.media.model_copy(update={"inline_max_bytes": 1000})
    stage = staging_key("demo", "med_b")
    await storage.put(stage, big, "image/png")
    out = ImagesOutput(
        created=1,
        data=[
            GeneratedImage(
                media=MediaRef(
                    media_id="med_a",
                    mime_type="image/png",
                    bytes=len(small),
                    data=base64.b64encode(small).decode(),
                )
            ),
            GeneratedImage(
                media=MediaRef(media_id="med_b", mime_type="image/png", bytes=len(big), key=stage)
            ),
        ],
    )
    produced = MediaProduced(
        request_id="r3",
        tenant_id="demo",
        result=ResultProduced(
            request_id="r3", tenant_id="demo", status="ok", operation="image.generate", output=out
        ),
    )
    result = await Outputs(media, storage).store(produced)
    a, b = (img.media for img in result.output.data)
    assert await storage.get(media_key("demo", "med_a")) == small and a.url and a.data is not None
    assert await storage.get(media_key("demo", "med_b")) == big and b.url and b.data is None
    assert await storage.head(stage) is None
    again = await Outputs(media, storage).store(produced)  # redelivered: the same objects, no error
    assert again.output.data[1].media.key == media_key("demo", "med_b")

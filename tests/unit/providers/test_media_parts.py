"""Resolved media parts (``part["media"]``, a MediaRef with its bytes) per chat wire format:
OpenAI ``image_url`` / ``file`` / ``input_audio``, Anthropic ``image`` / ``document`` blocks,
Ollama ``images``; the caller's URL instead of the bytes only when the media says
``pass_url``; what a provider cannot take is ``capability_not_supported``; the ``media`` key
never leaves the gateway. End to end, the in-process emulator says which types and byte
counts reached it."""

from __future__ import annotations

import base64
import copy
import io
import wave
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from PIL import Image
from starlette.applications import Starlette

from services.contracts.errors import CapabilityNotSupported, ValidationError
from services.emulator import create_app
from services.executor.providers.base import Completion
from services.executor.providers.registry import adapter_for
from tests.unit.runtime.media.test_documents import make_pdf

from .emulated import request, target
from .support import AsgiTransport, joined

KINDS = ("openai", "anthropic", "ollama")


# --- media as the executor hands it to adapters ----------------------------------------------------


def png(width: int, height: int, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def wav(frames: int = 800) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * frames)
    return buf.getvalue()


def b64(body: bytes) -> str:
    return base64.b64encode(body).decode()


def ref(mime: str, body: bytes, **extra: Any) -> dict[str, Any]:
    """A MediaRef dict with its bytes filled in, as the executor's materialiser leaves it."""
    return {"media_id": "med_" + "0" * 32, "mime_type": mime, "bytes": len(body), "data": b64(body), **extra}


#: Where the media-store leaves a part's URL once it stored the bytes of a data: URL.
STORED = "s3://media/tenants/t1/media/med_0"


def image(
    body: bytes,
    mime: str = "image/png",
    detail: str | None = None,
    url: str = STORED,
    pass_url: bool | None = None,
    **media: Any,
) -> dict[str, Any]:
    """A resolved ``image_url`` part; ``pass_url`` as the media-store sets it on the part."""
    spec: dict[str, Any] = {"url": url}
    if detail is not None:
        spec["detail"] = detail
    part: dict[str, Any] = {"type": "image_url", "image_url": spec, "media": ref(mime, body, **media)}
    if pass_url is not None:
        part["pass_url"] = pass_url
    return part


def file(
    body: bytes,
    mime: str = "application/pdf",
    name: str | None = None,
    pass_url: bool | None = None,
    **media: Any,
) -> dict[str, Any]:
    """A resolved ``file`` part; ``name``: the caller's ``file.filename``."""
    spec: dict[str, Any] = {"file_id": "file-" + "1" * 32, "url": STORED}
    if name is not None:
        spec["filename"] = name
    part: dict[str, Any] = {"type": "file", "file": spec, "media": ref(mime, body, **media)}
    if pass_url is not None:
        part["pass_url"] = pass_url
    return part


def audio(body: bytes, mime: str = "audio/wav", fmt: str = "wav") -> dict[str, Any]:
    return {"type": "input_audio", "input_audio": {"format": fmt}, "media": ref(mime, body)}


VIDEO = {
    "type": "video_url",
    "video_url": {"url": "file-v"},
    "media": ref("video/mp4", b"\x00\x00\x00\x18ftypisom"),
}
RED, BLUE = png(64, 48), png(32, 32, (0, 90, 200))
PDF = make_pdf("The launch code is tangerine")
SOURCE = "https://img.test/cat.png"
ASK = {"type": "text", "text": "what is in these?"}


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": [ASK, *parts]}


def wire(kind: str, *parts: dict[str, Any]) -> dict[str, Any]:
    return dict(adapter_for(kind).to_wire(request(user(*parts)), target(kind), stream=False))


def has_media_key(value: Any) -> bool:
    if isinstance(value, dict):
        return "media" in value or any(has_media_key(v) for v in value.values())
    if isinstance(value, list):
        return any(has_media_key(v) for v in value)
    return False


# --- OpenAI ----------------------------------------------------------------------------------------


def test_openai_images_become_data_urls_with_detail_kept() -> None:
    body = wire("openai", image(RED, detail="low"), image(BLUE, mime="image/webp"), image(RED, detail="high"))
    assert body["messages"][0]["content"] == [
        ASK,
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(RED)}", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": f"data:image/webp;base64,{b64(BLUE)}"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(RED)}", "detail": "high"}},
    ]
    assert not has_media_key(body)


def test_openai_sends_the_callers_url_only_when_the_part_says_pass_url() -> None:
    def url_of(part: dict[str, Any]) -> str:
        return str(wire("openai", part)["messages"][0]["content"][1]["image_url"]["url"])

    signed, redacted = "https://img.test/cat.png?sig=abc", "https://img.test/cat.png?<redacted>"
    assert url_of(image(RED, url=signed, source=redacted, pass_url=True, detail="auto")) == signed
    assert url_of(image(RED, source=SOURCE)).startswith("data:image/png;base64,")
    assert url_of(image(RED, url=signed, source=redacted)).startswith("data:"), "no pass_url: the bytes"
    assert url_of(image(RED, source=SOURCE, pass_url=True)) == SOURCE, (
        "the source when the part has no https URL"
    )
    assert url_of(image(RED, source=SOURCE, pass_url=False)).startswith("data:")
    assert url_of(
        image(RED, url="http://img.test/a.png", source="http://img.test/a.png", pass_url=True)
    ).startswith("data:"), "never plain http"
    assert url_of(image(RED, source=redacted, pass_url=True)).startswith("data:"), (
        "a redacted URL cannot be fetched"
    )
    assert url_of(image(RED, pass_url=True)).startswith("data:"), "no https URL at all: the bytes"
    media_flag = image(RED, source=SOURCE)
    media_flag["media"]["pass_url"] = True
    assert url_of(media_flag) == SOURCE, "the flag on the MediaRef dict counts too"
    assert "pass_url" not in wire("openai", image(RED, pass_url=True))["messages"][0]["content"][1]


def test_openai_files_pdf_as_file_data_text_as_text() -> None:
    content = wire(
        "openai",
        file(PDF, name="memo.pdf"),
        file(PDF),
        file(b"hello\nworld", mime="text/plain", name="notes.txt"),
    )["messages"][0]["content"]
    assert content[1] == {
        "type": "file",
        "file": {"filename": "memo.pdf", "file_data": f"data:application/pdf;base64,{b64(PDF)}"},
    }
    assert content[2]["file"]["filename"] == "document.pdf" and "file_id" not in content[2]["file"]
    assert content[3] == {"type": "text", "text": "notes.txt\nhello\nworld"}
    named = wire("openai", file(PDF, filename="store.pdf"))["messages"][0]["content"][1]
    assert named["file"]["filename"] == "store.pdf", "the media's own name when the part has none"


def test_openai_audio_format_from_the_mime_type() -> None:
    sound = wav()
    content = wire("openai", audio(sound), audio(b"ID3\x03", mime="audio/mpeg", fmt="wav"))["messages"][0][
        "content"
    ]
    assert content[1] == {"type": "input_audio", "input_audio": {"data": b64(sound), "format": "wav"}}
    assert content[2]["input_audio"]["format"] == "mp3", "the sniffed type wins over the caller's format"
    with pytest.raises(CapabilityNotSupported, match="audio/ogg"):
        wire("openai", audio(b"OggS", mime="audio/ogg"))


def test_openai_refuses_video_and_other_files() -> None:
    with pytest.raises(CapabilityNotSupported, match="video"):
        wire("openai", VIDEO)
    with pytest.raises(CapabilityNotSupported, match="video"):
        wire("openai", {"type": "video_url", "video_url": {"url": "https://v.test/a.mp4"}})
    with pytest.raises(CapabilityNotSupported, match="application/zip files"):
        wire("openai", file(b"PK\x03\x04", mime="application/zip", name="a.zip"))
    with pytest.raises(ValidationError, match="not UTF-8"):
        wire("openai", file(b"\xff\xfe\x00", mime="text/plain", name="bad.txt"))


@pytest.mark.parametrize("kind", KINDS)
def test_the_gateways_own_image_and_document_spellings(kind: str) -> None:
    """``{"type": "image", "image": {...}}`` / ``{"type": "document", ...}`` map like image_url / file."""
    own = {"type": "image", "image": {"url": STORED, "detail": "low"}, "media": ref("image/png", RED)}
    text = {"type": "document", "document": {"filename": "t.txt"}, "media": ref("text/plain", b"hi")}
    assert wire(kind, own) == wire(kind, image(RED, detail="low"))
    assert wire(kind, text) == wire(kind, file(b"hi", mime="text/plain", name="t.txt"))


def test_parts_without_media_go_as_before_and_the_request_is_not_changed() -> None:
    plain = {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "high"}}
    assert wire("openai", plain)["messages"][0]["content"][1] == plain
    native = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(RED)}}
    assert wire("anthropic", native)["messages"][0]["content"][1] == native, "an Anthropic block as it is"
    req = request(user(image(RED, source=SOURCE, pass_url=True), file(PDF, name="m.pdf")))
    before = copy.deepcopy(req.model_dump())
    for kind in ("openai", "anthropic"):
        adapter_for(kind).to_wire(req, target(kind), stream=True)
    assert req.model_dump() == before


# --- Anthropic -------------------------------------------------------------------------------------


def test_anthropic_images_become_base64_or_url_blocks() -> None:
    content = wire(
        "anthropic",
        image(RED, detail="high"),
        image(BLUE, mime="image/jpeg"),
        image(RED, source=SOURCE, pass_url=True),
    )["messages"][0]["content"]
    assert content[1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(RED)}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": b64(BLUE)}},
        {"type": "image", "source": {"type": "url", "url": SOURCE}},
    ]
    with pytest.raises(CapabilityNotSupported, match="image/bmp"):
        wire("anthropic", image(b"BM", mime="image/bmp"))


def test_anthropic_documents_pdf_and_text() -> None:
    content = wire(
        "anthropic",
        file(PDF, name="memo.pdf"),
        file(PDF),
        file("naïve text".encode(), mime="text/markdown", name="n.md"),
        file(PDF, name="far.pdf", source="https://docs.test/far.pdf", pass_url=True),
    )["messages"][0]["content"]
    assert content[1] == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": b64(PDF)},
        "title": "memo.pdf",
    }
    assert "title" not in content[2], "no name, no title"
    assert content[3] == {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "naïve text"},
        "title": "n.md",
    }
    assert content[4]["source"] == {"type": "url", "url": "https://docs.test/far.pdf"}
    with pytest.raises(CapabilityNotSupported, match="application/zip files"):
        wire("anthropic", file(b"PK", mime="application/zip"))


def test_anthropic_media_in_tool_results_and_no_media_key() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "snap", "arguments": "{}"}}
    req = request(
        {"role": "user", "content": "take a picture"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": [image(RED)]},
    )
    body = adapter_for("anthropic").to_wire(req, target("anthropic"), stream=False)
    result = body["messages"][2]["content"][0]
    assert result["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(RED)}}
    ]
    assert not has_media_key(body)


@pytest.mark.parametrize(
    "part", [audio(wav()), {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]
)
def test_anthropic_has_no_audio_input(part: dict[str, Any]) -> None:
    with pytest.raises(CapabilityNotSupported, match="audio"):
        wire("anthropic", part)
    with pytest.raises(CapabilityNotSupported, match="video"):
        wire("anthropic", VIDEO)


# --- Ollama ----------------------------------------------------------------------------------------


def test_ollama_images_list_the_bytes_and_text_is_content() -> None:
    message = wire("ollama", image(RED), image(BLUE, source=SOURCE, pass_url=True))["messages"][0]
    assert message == {"role": "user", "content": ASK["text"], "images": [b64(RED), b64(BLUE)]}


def test_ollama_text_files_join_the_content_apart() -> None:
    req = request(
        user(file(b"line one", mime="text/plain", name="a.txt"), {"type": "text", "text": "and then?"})
    )
    (message,) = adapter_for("ollama").to_wire(req, target("ollama"), stream=False)["messages"]
    assert message["content"] == "what is in these?\n\na.txt\nline one\n\nand then?"


@pytest.mark.parametrize(
    ("part", "match"),
    [
        (file(PDF, name="m.pdf"), "documents: extract"),
        ({"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}}, "files"),
        (audio(wav()), "audio"),
        (VIDEO, "video"),
    ],
)
def test_ollama_refuses_what_it_cannot_read(part: dict[str, Any], match: str) -> None:
    with pytest.raises(CapabilityNotSupported, match=match) as info:
        wire("ollama", part)
    assert info.value.code == "capability_not_supported" and info.value.param == "messages"


# --- end to end against the emulator ---------------------------------------------------------------


@pytest.fixture
async def emu() -> AsyncIterator[tuple[AsgiTransport, Starlette]]:
    app = create_app()
    async with AsgiTransport(app) as http:
        yield http, app


async def answer(
    emu: tuple[AsgiTransport, Starlette], kind: str, *parts: dict[str, Any], scenario: str = ""
) -> list[str]:
    """The whole and the streamed answer's text (asserted equal), and what the call log noted."""
    http, app = emu
    adapter, dep, req = adapter_for(kind), target(kind, scenario), request(user(*parts))
    done: Completion = await adapter.complete(http, req, dep, None)
    streamed = joined([d async for d in adapter.stream(http, req, dep, None)])
    assert streamed == done.message.content
    whole, streamed_call = list(app.state.calls)[-2:]
    assert whole["media"] == streamed_call["media"]
    return [done.message.content or "", *whole["media"]]


@pytest.mark.parametrize("kind", KINDS)
async def test_every_provider_sees_each_image_type_and_size(emu: Any, kind: str) -> None:
    text, *media = await answer(emu, kind, image(RED, detail="high"), image(BLUE))
    assert media == [f"saw image/png {len(RED)} bytes", f"saw image/png {len(BLUE)} bytes"]
    assert text.startswith("; ".join(media) + "\n") and text.endswith("tok7")


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_pdfs_reach_document_providers_as_bytes(emu: Any, kind: str) -> None:
    text, *media = await answer(emu, kind, file(PDF, name="memo.pdf"))
    assert media == [f"saw application/pdf {len(PDF)} bytes"] and media[0] in text


async def test_passed_urls_reach_the_provider_as_urls(emu: Any) -> None:
    for kind in ("openai", "anthropic"):
        _, *media = await answer(emu, kind, image(RED, source=SOURCE, pass_url=True))
        assert media == ["saw image url img.test"]


async def test_text_files_reach_the_providers_as_text(emu: Any) -> None:
    notes = file(b"remember the milk", mime="text/plain", name="notes.txt")
    _, *media = await answer(emu, "anthropic", notes)
    assert media == [f"saw text/plain {len(b'remember the milk')} bytes"]
    for kind in ("openai", "ollama"):
        http, _ = emu
        adapter, req = adapter_for(kind), request(user(notes))
        done = await adapter.complete(http, req, target(kind, "echo=1"), None)
        assert "notes.txt\nremember the milk" in (done.message.content or "")


async def test_openai_audio_reaches_the_provider(emu: Any) -> None:
    sound = wav(1600)
    text, *media = await answer(emu, "openai", audio(sound))
    assert media == [f"saw audio/wav {len(sound)} bytes"] and text.startswith(media[0])


async def test_the_emulator_refuses_a_media_key_and_bad_base64(emu: Any) -> None:
    http, _ = emu
    leaked = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(RED)}"}, "media": {}}
    bodies = {
        "openai": ("http://emulator/v1/chat/completions", {"model": "m", "messages": [user(leaked)]}),
        "anthropic": (
            "http://emulator/v1/messages",
            {
                "model": "m",
                "max_tokens": 10,
                "messages": [
                    user(
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "A"},
                            "media": {},
                        }
                    )
                ],
            },
        ),
        "ollama": (
            "http://emulator/api/chat",
            {
                "model": "m",
                "stream": False,
                "messages": [{"role": "user", "content": "x", "images": ["not base64!"]}],
            },
        ),
    }
    for kind, (url, body) in bodies.items():
        status, raw = await http.post_json(
            url, {"content-type": "application/json"}, orjson.dumps(body), None
        )
        assert status == 400, (kind, raw)
    bad = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "@@@"}}
    status, raw = await http.post_json(
        "http://emulator/v1/messages",
        {"content-type": "application/json"},
        orjson.dumps({"model": "m", "max_tokens": 10, "messages": [user(bad)]}),
        None,
    )
    assert status == 400 and b"base64" in raw


async def test_no_media_no_notes_and_echo_stays_verbatim(emu: Any) -> None:
    http, app = emu
    for kind in KINDS:
        done = await adapter_for(kind).complete(http, request(), target(kind), None)
        assert done.message.content == "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7"
        assert "media" not in app.state.calls[-1]
        echoed = await adapter_for(kind).complete(
            http, request(user(image(RED))), target(kind, "echo=1"), None
        )
        assert echoed.message.content == ASK["text"]
        assert app.state.calls[-1]["media"] == [f"saw image/png {len(RED)} bytes"]

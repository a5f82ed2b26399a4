"""The edge's claim check: large inline media goes to storage before the request event."""

from __future__ import annotations

import base64

from services.edge.claims import claim_check
from services.runtime.media.refs import media_key
from services.runtime.media.storage import MemoryFileStorage

LIMIT = 1000


def url(mime: str, body: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(body).decode()}"


async def test_large_inline_media_is_stored_and_named_by_media_id():
    storage = MemoryFileStorage("llmgw-media")
    await storage.start()
    big, small = b"\x89PNG" + b"x" * 5000, b"\x89PNG" + b"y" * 10
    audio = b"RIFF" + b"z" * 4000
    messages = [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": url("image/png", big), "detail": "high"}},
                {"type": "image_url", "image_url": {"url": url("image/png", small)}},
                {"type": "file", "file": {"filename": "a.pdf", "file_data": url("application/pdf", big)}},
                {
                    "type": "input_audio",
                    "input_audio": {"data": base64.b64encode(audio).decode(), "format": "wav"},
                },
            ],
        },
    ]
    out = await claim_check(storage, "demo", messages, LIMIT)
    parts = out[1]["content"]
    image_id = parts[1]["image_url"]["url"]
    assert image_id.startswith("med_") and parts[1]["image_url"]["detail"] == "high"
    assert await storage.get(media_key("demo", image_id)) == big
    assert parts[2] == messages[1]["content"][2]  # small: stays inline
    assert "file_data" not in parts[3]["file"] and parts[3]["file"]["filename"] == "a.pdf"
    assert await storage.get(media_key("demo", parts[3]["file"]["file_id"])) == big
    assert "data" not in parts[4]["input_audio"] and parts[4]["input_audio"]["format"] == "wav"
    assert await storage.get(media_key("demo", parts[4]["input_audio"]["url"])) == audio
    assert out[0] is messages[0] and messages[1]["content"][1]["image_url"]["url"].startswith("data:")


async def test_nothing_large_leaves_the_messages_alone():
    storage = MemoryFileStorage("llmgw-media")
    await storage.start()
    messages = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.example/a.png"}}]}
    ]
    assert await claim_check(storage, "demo", messages, LIMIT) is messages
    bad = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + "!" * 5000}}],
        }
    ]
    assert (await claim_check(storage, "demo", bad, LIMIT))[0]["content"][0] == bad[0]["content"][0]
    assert await storage.keys("tenants/") == []

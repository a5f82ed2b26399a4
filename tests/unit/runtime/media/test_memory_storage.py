"""The in-memory FileStorage twin keeps the S3 storage's rules (the handlers' unit tests rely on
it): metadata names and values as S3 gives them back, MediaNotFound, the byte limit of streams."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.contracts.errors import MediaNotFound, PayloadTooLarge
from services.runtime.media.storage import FileStorage, MemoryFileStorage


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


@pytest.fixture
async def storage() -> MemoryFileStorage:
    s = MemoryFileStorage("llmgw-media")
    await s.start()
    return s


async def test_put_head_get_round_trip_metadata_as_s3_does(storage):
    put = await storage.put("k", b"abc", "image/png", filename="café.png", metadata={"Request_ID": "r1"})
    assert put.metadata == {"request_id": "r1"} and put.filename == "café.png" and put.bytes == 3
    assert await storage.head("k") == put and await storage.get("k") == b"abc"
    assert await storage.head("none") is None
    with pytest.raises(MediaNotFound):
        await storage.get("none")
    with pytest.raises(ValueError, match="reserved"):
        await storage.put("k", b"x", "text/plain", metadata={"created-at": "1"})


async def test_streams_over_the_limit_store_nothing(storage):
    with pytest.raises(PayloadTooLarge):
        await storage.put_stream("k", chunks(b"a" * 6, b"b" * 6), "text/plain", max_bytes=10)
    assert await storage.keys("") == []
    stored = await storage.put_stream("k", chunks(b"a" * 5, b"b" * 5), "text/plain", max_bytes=10)
    assert stored.bytes == 10 and await storage.get("k") == b"aaaaabbbbb"


async def test_open_copy_delete_keys_presign(storage: FileStorage):
    await storage.put("tenants/a/staging/m", b"x" * 600_000, "audio/wav", filename="a.wav")
    async with storage.open("tenants/a/staging/m") as stream:
        got = [c async for c in stream]
    assert len(got) > 1 and b"".join(got) == b"x" * 600_000
    with pytest.raises(MediaNotFound):
        async with storage.open("missing"):
            pass
    copied = await storage.copy("tenants/a/staging/m", "tenants/a/media/m")
    assert copied.key == "tenants/a/media/m" and copied.filename == "a.wav"
    with pytest.raises(MediaNotFound):
        await storage.copy("missing", "x")
    await storage.delete("tenants/a/staging/m")
    await storage.delete("tenants/a/staging/m")
    assert await storage.keys("tenants/a/") == ["tenants/a/media/m"]
    assert (
        await storage.presign("tenants/a/media/m", 60) == "memory://llmgw-media/tenants/a/media/m?expires=60"
    )

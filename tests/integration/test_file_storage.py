"""``S3FileStorage`` on a real S3 endpoint (moto's server, as ``llmgw up`` runs it): whole-object
puts and reads, metadata round trips, presigned URLs an ordinary HTTP client fetches, multipart
streaming with a bounded buffer, aborts that leave nothing behind, copies, deletes, listings."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from services.cli import infra
from services.contracts.errors import MediaNotFound, PayloadTooLarge
from services.runtime.media.storage import MIN_PART_SIZE, FileStorage, S3FileStorage
from services.runtime.s3 import LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY

CHUNK = 64 * 1024
BIG = 20_000_000


@pytest.fixture(scope="module")
def s3_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = infra.free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen(
        infra.moto_command(port), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        infra.wait_port("127.0.0.1", port, 30, proc, "moto")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
async def storage(s3_url: str) -> AsyncIterator[S3FileStorage]:
    s = S3FileStorage(f"media-{uuid.uuid4().hex[:10]}", endpoint_url=s3_url, part_size=MIN_PART_SIZE)
    await s.start()
    yield s
    await s.aclose()


@pytest.fixture
async def raw(s3_url: str) -> AsyncIterator[Any]:
    """A plain S3 client, to look at the bucket behind the storage's back."""
    import aioboto3

    session = aioboto3.Session(
        aws_access_key_id=LOCAL_ACCESS_KEY, aws_secret_access_key=LOCAL_SECRET_KEY, region_name="us-east-1"
    )
    async with session.client("s3", endpoint_url=s3_url) as client:
        yield client


def body_of(n: int) -> bytes:
    """``n`` bytes that differ everywhere, so a misplaced part cannot go unnoticed."""
    seed = hashlib.sha256(b"media").digest()
    out = bytearray()
    while len(out) < n:
        seed = hashlib.sha256(seed).digest()
        out += seed * 64
    return bytes(out[:n])


async def chunked(body: bytes, size: int = CHUNK) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def uploads(raw: Any, bucket: str) -> list[dict[str, Any]]:
    return list((await raw.list_multipart_uploads(Bucket=bucket)).get("Uploads", []))


async def test_the_port_is_implemented():
    storage: FileStorage = S3FileStorage("b", endpoint_url=None)  # a type check as much as a test
    assert storage.bucket == "b"


async def test_put_get_head_keep_bytes_type_and_metadata(storage: S3FileStorage):
    body = os.urandom(10_000)
    key = "tenants/demo/files/file-1"
    put = await storage.put(
        key,
        body,
        "image/png",
        filename="café résumé.png",
        metadata={"request_id": "r1", "source": "https://example.com/a b?<redacted>"},
    )
    head = await storage.head(key)
    assert head == put
    assert head is not None and head.filename == "café résumé.png" and head.mime_type == "image/png"
    assert head.bytes == len(body) and head.metadata == {
        "request_id": "r1",
        "source": "https://example.com/a b?<redacted>",
    }
    assert abs(head.created_at - put.created_at) <= 1 and head.created_at > 1_700_000_000
    assert await storage.get(key) == body
    assert await storage.head("tenants/demo/files/none") is None
    with pytest.raises(MediaNotFound):
        await storage.get("tenants/demo/files/none")


async def test_reserved_metadata_names_are_refused(storage: S3FileStorage):
    with pytest.raises(ValueError, match="reserved"):
        await storage.put("k", b"x", "text/plain", metadata={"filename": "x"})


async def test_open_streams_in_chunks(storage: S3FileStorage):
    body = body_of(3_000_000)
    await storage.put("big", body, "application/octet-stream")
    async with storage.open("big") as chunks:
        parts = [c async for c in chunks]
    assert len(parts) > 1 and b"".join(parts) == body
    with pytest.raises(MediaNotFound):
        async with storage.open("missing") as chunks:
            pass


async def test_a_presigned_url_is_fetched_by_any_http_client(storage: S3FileStorage):
    body = os.urandom(50_000)
    await storage.put("tenants/demo/media/med_1", body, "audio/wav")
    url = await storage.presign("tenants/demo/media/med_1", 300)
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=300" in url
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "audio/wav"
        assert await answer.read() == body


async def test_put_stream_uploads_parts_and_never_holds_more_than_one(storage: S3FileStorage, raw: Any):
    """20 MB in 64 KiB chunks: the body arrives whole, in 4 parts (ETag "-4"), and while it is sent
    the bytes taken from the stream but not yet in an uploaded part stay under one part (+ a chunk)."""
    body = body_of(BIG)
    key = "tenants/demo/media/med_big"
    held: list[int] = []

    async def probed() -> AsyncIterator[bytes]:
        given = 0
        for start in range(0, len(body), CHUNK):
            held.append(given - await sent_so_far())  # taken from the stream, not yet in a part
            yield body[start : start + CHUNK]
            given += CHUNK

    async def sent_so_far() -> int:
        up = await uploads(raw, storage.bucket)
        if not up:
            return 0
        parts = await raw.list_parts(Bucket=storage.bucket, Key=key, UploadId=up[0]["UploadId"])
        return sum(int(p["Size"]) for p in parts.get("Parts", []))

    stored = await storage.put_stream(
        key, probed(), "video/mp4", max_bytes=BIG, filename="clip.mp4", metadata={"request_id": "r9"}
    )
    assert stored.bytes == BIG
    assert await storage.get(key) == body
    head = await raw.head_object(Bucket=storage.bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-4")  # ceil(20 MB / 5 MiB) parts
    assert head["ContentType"] == "video/mp4"
    assert await storage.head(key) == stored
    assert len(held) == -(-BIG // CHUNK) and max(held) == MIN_PART_SIZE - CHUNK  # one part, less a chunk
    assert await uploads(raw, storage.bucket) == []


async def test_a_stream_smaller_than_a_part_is_one_plain_put(storage: S3FileStorage, raw: Any):
    body = body_of(300_000)
    stored = await storage.put_stream("small", chunked(body), "image/png", max_bytes=len(body))
    assert stored.bytes == len(body) and await storage.get("small") == body
    head = await raw.head_object(Bucket=storage.bucket, Key="small")
    assert "-" not in head["ETag"]
    empty = await storage.put_stream("empty", chunked(b""), "text/plain", max_bytes=10)
    assert empty.bytes == 0 and await storage.get("empty") == b""


async def test_a_stream_over_max_bytes_is_aborted_leaving_nothing(storage: S3FileStorage, raw: Any):
    body = body_of(12 * 1024 * 1024)  # two parts are up when the limit is passed
    with pytest.raises(PayloadTooLarge):
        await storage.put_stream("over", chunked(body), "video/mp4", max_bytes=11 * 1024 * 1024)
    assert await storage.head("over") is None
    assert await uploads(raw, storage.bucket) == []
    assert await storage.keys("") == []


async def test_a_failing_stream_is_aborted_leaving_nothing(storage: S3FileStorage, raw: Any):
    async def broken() -> AsyncIterator[bytes]:
        async for chunk in chunked(body_of(7 * 1024 * 1024)):
            yield chunk
        raise ConnectionResetError("the caller went away")

    with pytest.raises(ConnectionResetError):
        await storage.put_stream("broken", broken(), "video/mp4", max_bytes=BIG)
    assert await storage.head("broken") is None and await uploads(raw, storage.bucket) == []


async def test_a_cancelled_stream_is_aborted_leaving_nothing(storage: S3FileStorage, raw: Any):
    started = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        async for chunk in chunked(body_of(6 * 1024 * 1024)):
            yield chunk
        started.set()
        await asyncio.Event().wait()  # never comes
        yield b""

    task = asyncio.create_task(storage.put_stream("stalled", stalled(), "video/mp4", max_bytes=BIG))
    await started.wait()
    assert len(await uploads(raw, storage.bucket)) == 1  # a part is up
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await uploads(raw, storage.bucket) == [] and await storage.head("stalled") is None


async def test_copy_keeps_bytes_type_and_metadata(storage: S3FileStorage):
    body = os.urandom(1000)
    src = await storage.put(
        "tenants/demo/staging/med_1", body, "image/webp", filename="ü.webp", metadata={"a": "1"}
    )
    copied = await storage.copy("tenants/demo/staging/med_1", "tenants/demo/media/med_1")
    assert copied.key == "tenants/demo/media/med_1" and await storage.get(copied.key) == body
    assert (copied.mime_type, copied.filename, copied.metadata, copied.created_at, copied.bytes) == (
        src.mime_type,
        src.filename,
        src.metadata,
        src.created_at,
        src.bytes,
    )
    with pytest.raises(MediaNotFound):
        await storage.copy("tenants/demo/staging/none", "tenants/demo/media/x")


async def test_delete_and_keys(storage: S3FileStorage):
    for key in ("tenants/b/media/2", "tenants/a/media/1", "tenants/a/files/f", "tenants/ab/media/3"):
        await storage.put(key, b"x", "text/plain")
    assert await storage.keys("tenants/a/") == ["tenants/a/files/f", "tenants/a/media/1"]
    assert await storage.keys("tenants/") == [
        "tenants/a/files/f",
        "tenants/a/media/1",
        "tenants/ab/media/3",
        "tenants/b/media/2",
    ]
    await storage.delete("tenants/a/media/1")
    await storage.delete("tenants/a/media/1")  # absent: no error
    assert await storage.keys("tenants/a/") == ["tenants/a/files/f"]
    assert await storage.head("tenants/a/media/1") is None


async def test_start_creates_the_bucket_once_and_again_is_harmless(s3_url: str, raw: Any):
    bucket = f"media-{uuid.uuid4().hex[:10]}"
    async with (
        S3FileStorage(bucket, endpoint_url=s3_url) as first,
        S3FileStorage(bucket, endpoint_url=s3_url) as second,
    ):
        await first.put("k", b"v", "text/plain")
        assert await second.get("k") == b"v"
    names = [b["Name"] for b in (await raw.list_buckets())["Buckets"]]
    assert bucket in names


def test_parts_under_the_s3_minimum_are_refused():
    with pytest.raises(ValueError, match="minimum"):
        S3FileStorage("b", endpoint_url=None, part_size=MIN_PART_SIZE - 1)

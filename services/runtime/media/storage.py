"""Where media and files are kept: the ``FileStorage`` port, S3 through aioboto3, and an in-memory
twin for tests.

Objects carry their type (``Content-Type``) and, in S3 user metadata, their ``filename``, their
``created_at`` (unix seconds) and whatever the caller adds (``request_id``, ``source`` …). S3 user
metadata travels in HTTP headers, so every value is stored percent-encoded (ASCII) and read back
decoded: a file named ``café.png`` round-trips.

``put_stream`` never holds a whole body: it buffers one part at a time (``part_size``, at least
S3's 5 MiB minimum) and sends it as a part of a multipart upload, started only once the first part
is full (a body smaller than one part is one plain ``PUT``). A body over ``max_bytes``, or any
failure, aborts the upload: no object and no incomplete upload is left behind.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote, unquote

from services.contracts.errors import MediaNotFound, PayloadTooLarge
from services.runtime.s3 import S3Bucket, error_code

log = logging.getLogger(__name__)

#: S3's smallest part (every part of a multipart upload but the last).
MIN_PART_SIZE = 5 * 1024 * 1024
DEFAULT_PART_SIZE = 5 * 1024 * 1024  # S3's minimum: the least memory held per upload
#: How much ``open`` reads at a time.
READ_CHUNK = 256 * 1024
#: Metadata names the storage itself sets; a caller's metadata may not use them.
FILENAME = "filename"
CREATED_AT = "created-at"
_RESERVED = frozenset({FILENAME, CREATED_AT})


@dataclass(frozen=True)
class StoredFile:
    """What is known of a stored object without reading it."""

    key: str
    bytes: int
    mime_type: str
    filename: str | None
    created_at: int
    metadata: dict[str, str] = field(default_factory=dict)


class FileStorage(Protocol):
    """One bucket of media and files. Keys are the caller's (see ``refs``: tenant prefixes)."""

    bucket: str

    async def start(self) -> None:
        """Connect (and create the bucket when it is missing)."""
        ...

    async def aclose(self) -> None: ...

    async def put(
        self,
        key: str,
        body: bytes,
        mime_type: str,
        *,
        filename: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> StoredFile:
        """Write ``body`` under ``key`` (replacing any object there)."""
        ...

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        mime_type: str,
        *,
        max_bytes: int,
        filename: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> StoredFile:
        """Write the concatenation of ``chunks`` under ``key``, holding at most one part of it at a
        time. More than ``max_bytes``: ``PayloadTooLarge``, and nothing is stored."""
        ...

    async def get(self, key: str) -> bytes:
        """The object's bytes; ``MediaNotFound`` if there is none."""
        ...

    def open(self, key: str) -> contextlib.AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """The object's bytes as a stream of chunks; entering raises ``MediaNotFound`` if there is
        no object."""
        ...

    async def head(self, key: str) -> StoredFile | None:
        """The object's description, or None when there is none."""
        ...

    async def presign(self, key: str, expiry_s: int) -> str:
        """A URL any HTTP client can GET the object from for ``expiry_s`` seconds."""
        ...

    async def copy(self, src: str, dst: str) -> StoredFile:
        """Copy ``src`` (bytes, type and metadata) to ``dst``; ``MediaNotFound`` if ``src`` is
        absent."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; removing an absent one is no error."""
        ...

    async def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, ascending."""
        ...


def _encode_metadata(
    filename: str | None, created_at: int, metadata: dict[str, str] | None
) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in (metadata or {}).items():
        low = name.lower()
        if low in _RESERVED or not low or not low.isascii() or not all(c.isalnum() or c in "-_" for c in low):
            raise ValueError(f"metadata name {name!r} is reserved or not [a-z0-9_-]")
        out[low] = quote(value, safe="")
    if filename is not None:
        out[FILENAME] = quote(filename, safe="")
    out[CREATED_AT] = str(created_at)
    return out


def _names(metadata: dict[str, str] | None) -> dict[str, str]:
    """``metadata`` as S3 gives it back: names in lower case."""
    return {k.lower(): v for k, v in (metadata or {}).items()}


def _decoded(
    key: str, size: int, mime_type: str, stored: dict[str, str], last_modified: datetime | None = None
) -> StoredFile:
    meta = {k.lower(): unquote(v) for k, v in stored.items()}
    filename = meta.pop(FILENAME, None)
    created = meta.pop(CREATED_AT, "")
    if created.isdigit():
        created_at = int(created)
    else:  # an object another writer stored
        created_at = int(last_modified.timestamp()) if last_modified is not None else 0
    return StoredFile(key, size, mime_type, filename, created_at, meta)


class S3FileStorage(S3Bucket):
    """``FileStorage`` on an S3 bucket (``services.runtime.s3.S3Bucket``: path-style addressing,
    SigV4, the local stack's credentials when the environment has none); ``start()`` creates the
    bucket when it is missing."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None,
        max_connections: int = 64,
        part_size: int = DEFAULT_PART_SIZE,
    ):
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size {part_size} is under S3's minimum part size {MIN_PART_SIZE}")
        super().__init__(bucket, endpoint_url=endpoint_url, max_connections=max_connections)
        self.part_size = part_size

    async def put(
        self,
        key: str,
        body: bytes,
        mime_type: str,
        *,
        filename: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> StoredFile:
        created_at = int(time.time())
        meta = _encode_metadata(filename, created_at, metadata)
        await self._client.put_object(
            Bucket=self.bucket, Key=key, Body=body, ContentType=mime_type, Metadata=meta
        )
        return StoredFile(key, len(body), mime_type, filename, created_at, _names(metadata))

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        mime_type: str,
        *,
        max_bytes: int,
        filename: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> StoredFile:
        created_at = int(time.time())
        meta = _encode_metadata(filename, created_at, metadata)
        upload = _Upload(self._client, self.bucket, key, mime_type, meta)
        # the chunks of the part being filled, joined once when it is full (one copy of a part,
        # never a growing buffer re-allocated and sliced): a part is every chunk up to at least
        # part_size bytes, S3 takes parts of any size above its minimum
        pending: list[bytes] = []
        held = total = 0
        try:
            async for chunk in chunks:
                total += len(chunk)
                if total > max_bytes:
                    raise PayloadTooLarge(
                        f"the body is over the limit of {max_bytes} bytes", details={"max_bytes": max_bytes}
                    )
                pending.append(chunk)
                held += len(chunk)
                if held >= self.part_size:
                    body = b"".join(pending)
                    pending.clear()
                    held = 0
                    await upload.part(body)
                    del body
            rest = b"".join(pending)
            pending.clear()
            if upload.upload_id is None:  # smaller than one part: one plain PUT
                await self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=rest, ContentType=mime_type, Metadata=meta
                )
            else:
                if rest:
                    await upload.part(rest)
                del rest
                await upload.complete()
        except BaseException:
            await upload.abort()
            raise
        return StoredFile(key, total, mime_type, filename, created_at, _names(metadata))

    async def get(self, key: str) -> bytes:
        async with self.open(key) as chunks:
            return b"".join([c async for c in chunks])

    @contextlib.asynccontextmanager
    async def open(self, key: str) -> AsyncIterator[AsyncIterator[bytes]]:
        try:
            answer = await self._client.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise MediaNotFound(f"no stored object {key!r}") from exc
            raise
        body = answer["Body"]  # entered, it is aiohttp's response: chunks come from the wrapper
        async with body:
            yield body.iter_chunks(READ_CHUNK)

    async def head(self, key: str) -> StoredFile | None:
        try:
            answer = await self._client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        return _decoded(
            key,
            int(answer["ContentLength"]),
            str(answer.get("ContentType") or "application/octet-stream"),
            answer.get("Metadata") or {},
            answer.get("LastModified"),
        )

    async def presign(self, key: str, expiry_s: int) -> str:
        url = await self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expiry_s
        )
        return str(url)

    async def copy(self, src: str, dst: str) -> StoredFile:
        try:
            await self._client.copy_object(
                Bucket=self.bucket,
                Key=dst,
                CopySource={"Bucket": self.bucket, "Key": src},
                MetadataDirective="COPY",
            )
        except Exception as exc:
            if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise MediaNotFound(f"no stored object {src!r}") from exc
            raise
        stored = await self.head(dst)
        if stored is None:  # removed again in between
            raise MediaNotFound(f"no stored object {dst!r}")
        return stored

    async def delete(self, key: str) -> None:
        await self._client.delete_object(Bucket=self.bucket, Key=key)

    async def keys(self, prefix: str) -> list[str]:
        out: list[str] = []
        async for page in self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            out.extend(o["Key"] for o in page.get("Contents", ()))
        return sorted(out)


class _Upload:
    """One multipart upload, created with its first part."""

    def __init__(self, client: Any, bucket: str, key: str, mime_type: str, metadata: dict[str, str]):
        self._client = client
        self._where = {"Bucket": bucket, "Key": key}
        self._mime_type = mime_type
        self._metadata = metadata
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    async def part(self, body: bytes) -> None:
        if self.upload_id is None:
            started = await self._client.create_multipart_upload(
                **self._where, ContentType=self._mime_type, Metadata=self._metadata
            )
            self.upload_id = str(started["UploadId"])
        number = len(self.parts) + 1
        answer = await self._client.upload_part(
            **self._where, UploadId=self.upload_id, PartNumber=number, Body=body
        )
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    async def complete(self) -> None:
        await self._client.complete_multipart_upload(
            **self._where, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )
        self.upload_id = None

    async def abort(self) -> None:
        if self.upload_id is None:
            return
        upload_id, self.upload_id = self.upload_id, None
        try:
            await self._client.abort_multipart_upload(**self._where, UploadId=upload_id)
        except Exception:  # the original error matters more; the bucket's lifecycle rule is the backstop
            log.warning(
                "could not abort the multipart upload %s of %s", upload_id, self._where["Key"], exc_info=True
            )


class MemoryFileStorage:
    """``FileStorage`` in a dict (unit tests of the handlers); the same metadata rules as S3.
    ``presign`` gives ``memory://<bucket>/<key>?expires=<s>``; ``presigned`` records the keys."""

    def __init__(self, bucket: str = "media"):
        self.bucket = bucket
        self.objects: dict[str, tuple[bytes, StoredFile]] = {}
        self.presigned: list[str] = []

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def put(
        self,
        key: str,
        body: bytes,
        mime_type: str,
        *,
        filename: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> StoredFile:
        created_at = int(time.time())
        stored = _decoded(key, len(body), mime_type, _encode_metadata(filename, created_at, metadata))
        self.objects[key] = (bytes(body), stored)
        return stored

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        mime_type: str,
        *,
        max_bytes: int,
        filename: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> StoredFile:
        body = bytearray()
        async for chunk in chunks:
            body += chunk
            if len(body) > max_bytes:
                raise PayloadTooLarge(
                    f"the body is over the limit of {max_bytes} bytes", details={"max_bytes": max_bytes}
                )
        return await self.put(key, bytes(body), mime_type, filename=filename, metadata=metadata)

    async def get(self, key: str) -> bytes:
        if key not in self.objects:
            raise MediaNotFound(f"no stored object {key!r}")
        return self.objects[key][0]

    @contextlib.asynccontextmanager
    async def open(self, key: str) -> AsyncIterator[AsyncIterator[bytes]]:
        body = await self.get(key)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), READ_CHUNK):
                yield body[start : start + READ_CHUNK]

        yield chunks()

    async def head(self, key: str) -> StoredFile | None:
        entry = self.objects.get(key)
        return None if entry is None else entry[1]

    async def presign(self, key: str, expiry_s: int) -> str:
        self.presigned.append(key)
        return f"memory://{self.bucket}/{quote(key)}?expires={expiry_s}"

    async def copy(self, src: str, dst: str) -> StoredFile:
        body = await self.get(src)
        old = self.objects[src][1]
        stored = StoredFile(dst, old.bytes, old.mime_type, old.filename, old.created_at, dict(old.metadata))
        self.objects[dst] = (body, stored)
        return stored

    async def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    async def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

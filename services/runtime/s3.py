"""The object store the ledgers are written to: the ``ObjectStore`` port, S3 through aioboto3,
and an in-memory twin for tests.

Only what the sinks need: whole-object puts (optionally conditional), gets and sorted key
listings. A conditional put is how a writer learns that another one got there first:
``if_none_match`` creates the object only if no object has the key, ``if_match`` replaces it
only if it still has the ETag the writer last saw; either raises ``PreconditionFailed``
otherwise (S3 and MinIO have both since 2024, moto too).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol, Self

LOCAL_ACCESS_KEY = "llmgw"  # used when the environment has no AWS credentials: moto takes any,
LOCAL_SECRET_KEY = "llmgw-secret"  # the compose file's MinIO has these


class PreconditionFailed(Exception):
    """A conditional put lost: the key exists (``if_none_match``) or has changed (``if_match``)."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    body: bytes
    etag: str


class ObjectStore(Protocol):
    """One bucket. Keys are listed in ascending (byte) order."""

    async def put(
        self, key: str, body: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        """Write ``body`` under ``key`` atomically (readers see the old object or the new one, never
        part of it); returns the new ETag."""
        ...

    async def get(self, key: str) -> StoredObject | None:
        """The object, or None when there is none."""
        ...

    async def keys(self, prefix: str, *, start_after: str = "") -> list[str]:
        """Every key under ``prefix`` (after ``start_after`` when given), ascending."""
        ...

    async def aclose(self) -> None: ...


class S3Bucket:
    """One S3 bucket through aioboto3 (path-style addressing, as MinIO and moto want; SigV4, so
    presigned URLs work everywhere): ``start()`` enters the client and creates the bucket when it
    is missing, unless ``create_bucket`` is False (readers), when a missing bucket is a
    ``RuntimeError`` naming it. Credentials come from the usual AWS chain (environment, profile,
    instance role); with none there, the local stack's (``llmgw`` / ``llmgw-secret``) are used."""

    def __init__(
        self, bucket: str, *, endpoint_url: str | None, max_connections: int = 32, create_bucket: bool = True
    ):
        self.bucket = bucket
        self._create = create_bucket
        self._endpoint = endpoint_url
        self._max_connections = max_connections
        self._client: Any = None
        self._context: Any = None

    async def start(self) -> None:
        import aioboto3
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        core = get_session()
        if await core.get_credentials() is None:
            core.set_credentials(LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY)
        session = aioboto3.Session(botocore_session=core)
        config = AioConfig(
            max_pool_connections=self._max_connections,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"},
            signature_version="s3v4",
        )
        self._context = session.client(
            "s3",
            endpoint_url=self._endpoint,
            config=config,
            region_name=core.get_config_variable("region") or "us-east-1",
        )
        self._client = await self._context.__aenter__()
        try:
            await self._ensure_bucket()
        except BaseException as exc:
            await self.aclose()
            if isinstance(exc, Exception) and not isinstance(exc, RuntimeError):
                raise RuntimeError(f"S3 at {self._endpoint or 'AWS'}, bucket {self.bucket!r}: {exc}") from exc
            raise

    async def aclose(self) -> None:
        if self._context is not None:
            await self._context.__aexit__(None, None, None)
            self._context = self._client = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _ensure_bucket(self) -> None:
        try:
            await self._client.head_bucket(Bucket=self.bucket)
            return
        except Exception as exc:
            if error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise
            if not self._create:
                raise RuntimeError(f"no bucket {self.bucket!r} at {self._endpoint or 'S3'}") from exc
        try:
            await self._client.create_bucket(Bucket=self.bucket)
        except Exception as exc:  # another process created it in between
            if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise


class S3ObjectStore(S3Bucket):
    """``ObjectStore`` on an S3 bucket (``S3Bucket``)."""

    async def put(
        self, key: str, body: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        kw: dict[str, str] = {}
        if if_none_match:
            kw["IfNoneMatch"] = "*"
        if if_match is not None:
            kw["IfMatch"] = if_match
        try:
            answer = await self._client.put_object(Bucket=self.bucket, Key=key, Body=body, **kw)
        except Exception as exc:
            if error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise PreconditionFailed(key) from exc
            raise
        return str(answer["ETag"])

    async def get(self, key: str) -> StoredObject | None:
        try:
            answer = await self._client.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        async with answer["Body"] as stream:
            body = await stream.read()
        return StoredObject(body, str(answer["ETag"]))

    async def keys(self, prefix: str, *, start_after: str = "") -> list[str]:
        out: list[str] = []
        kw: dict[str, str] = {"Bucket": self.bucket, "Prefix": prefix}
        if start_after:
            kw["StartAfter"] = start_after
        async for page in self._client.get_paginator("list_objects_v2").paginate(**kw):
            out.extend(o["Key"] for o in page.get("Contents", ()))
        return out


class MemoryObjectStore:
    """``ObjectStore`` in a dict, with the same conditional-put rules (tests, dry runs)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts = 0

    async def put(
        self, key: str, body: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        old = self.objects.get(key)
        if if_none_match and old is not None:
            raise PreconditionFailed(key)
        if if_match is not None and (old is None or _etag(old) != if_match):
            raise PreconditionFailed(key)
        self.objects[key] = bytes(body)
        self.puts += 1
        return _etag(body)

    async def get(self, key: str) -> StoredObject | None:
        body = self.objects.get(key)
        return None if body is None else StoredObject(body, _etag(body))

    async def keys(self, prefix: str, *, start_after: str = "") -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix) and k > start_after)

    async def aclose(self) -> None:
        pass


def _etag(body: bytes) -> str:
    return '"' + hashlib.md5(body, usedforsecurity=False).hexdigest() + '"'


def error_code(exc: Exception) -> str:
    """The S3 error code of a botocore error ('' for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))

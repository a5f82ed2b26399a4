"""Object stores that misbehave on purpose, around the in-memory one (both sinks' tests use them)."""

from __future__ import annotations

import asyncio

from services.runtime.s3 import MemoryObjectStore, StoredObject


class DyingStore:
    """Lets ``puts`` puts through, then every later put hangs forever: the process died there
    (what it wrote stays written, what it was writing never lands)."""

    def __init__(self, inner: MemoryObjectStore, puts: int, only: str = ""):
        self.inner = inner
        self.left = puts
        self.only = only  # count only puts of keys starting with this
        self.died = asyncio.Event()

    async def put(self, key: str, body: bytes, **kw) -> str:
        if key.startswith(self.only):
            if self.left <= 0:
                self.died.set()
                await asyncio.Future()
            self.left -= 1
        return await self.inner.put(key, body, **kw)

    async def get(self, key: str) -> StoredObject | None:
        return await self.inner.get(key)

    async def keys(self, prefix: str, *, start_after: str = "") -> list[str]:
        return await self.inner.keys(prefix, start_after=start_after)

    async def aclose(self) -> None:
        pass


class FlakyStore(DyingStore):
    """The first ``failures`` puts (of keys starting with ``only``) raise, like an unreachable S3."""

    def __init__(self, inner: MemoryObjectStore, failures: int, only: str = ""):
        super().__init__(inner, 0, only)
        self.failures = failures

    async def put(self, key: str, body: bytes, **kw) -> str:
        if key.startswith(self.only) and self.failures > 0:
            self.failures -= 1
            raise OSError("connection refused")
        return await self.inner.put(key, body, **kw)

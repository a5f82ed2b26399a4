"""The Type Registry port: JSON Schemas by GTS id (tool definitions referenced as ``gts_ref``).

A GTS id names one version of a type: ``gts.<vendor>.<package>.<namespace>.<type>.v<MAJOR>[.<MINOR>]~``
(segments are lowercase letters, digits and ``_``, starting with a letter; MAJOR and MINOR
are non-negative integers without leading zeros). Registries look up only ids of that
grammar, so an id can never name a path or URL of its choosing.

Implementations:

* ``DirectoryTypeRegistry``: one JSON Schema file per type, named ``<gts id>.json``, in a
  configured directory; a file once read is kept for the life of the process.
* ``HttpTypeRegistry``: ``GET {base_url}/entities/{gts id}``, whose 200 body is the schema;
  any other status means the id is unknown. Answers are kept for ``cache_ttl_s``; a registry
  that cannot be reached raises ``TypeRegistryUnavailable`` (not "unknown").
* ``EmptyTypeRegistry``: no registry configured, every id is unknown.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson

from .config import TypesConfig

GTS_ID = re.compile(
    r"gts\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*"
    r"\.v(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))?~"
)
#: How an inline schema's ``$id`` names its type.
GTS_URI_PREFIX = "gts://"


def is_gts_id(value: object) -> bool:
    """Whether ``value`` is a GTS type id of the grammar above."""
    return isinstance(value, str) and GTS_ID.fullmatch(value) is not None


class UnknownType(LookupError):
    """The registry has no schema for this id (or the id is malformed)."""


class TypeRegistryUnavailable(RuntimeError):
    """The registry could not answer (unreachable, timed out, a body that is not a schema)."""


class TypeRegistry(Protocol):
    """Where schemas named by GTS id come from."""

    async def get(self, gts_id: str) -> dict[str, Any]:
        """The JSON Schema of ``gts_id``. ``UnknownType`` when there is none (a malformed id
        included); ``TypeRegistryUnavailable`` when the registry cannot say."""
        ...

    async def aclose(self) -> None: ...


def _checked(gts_id: str) -> str:
    if not is_gts_id(gts_id):
        raise UnknownType(
            f"{gts_id!r} is not a GTS type id (gts.<vendor>.<package>.<namespace>.<type>.v<MAJOR>[.<MINOR>]~)"
        )
    return gts_id


class EmptyTypeRegistry:
    """No registry configured: every id is unknown."""

    async def get(self, gts_id: str) -> dict[str, Any]:
        raise UnknownType(f"type {_checked(gts_id)} is not registered (no type registry is configured)")

    async def aclose(self) -> None:
        return None


class DirectoryTypeRegistry:
    """Schemas from ``<directory>/<gts id>.json``. Files found are cached for the process's
    life; a missing file is looked for again next time (a type may be added)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._cache: dict[str, dict[str, Any]] = {}

    async def get(self, gts_id: str) -> dict[str, Any]:
        schema = self._cache.get(gts_id)
        if schema is None:
            path = self.directory / f"{_checked(gts_id)}.json"
            try:
                raw = await asyncio.to_thread(path.read_bytes)
            except FileNotFoundError:
                raise UnknownType(f"type {gts_id} is not registered") from None
            except OSError as exc:
                raise TypeRegistryUnavailable(f"type registry: cannot read {path}: {exc}") from exc
            schema = self._cache[gts_id] = _schema(raw, str(path))
        return schema

    async def aclose(self) -> None:
        return None


class HttpTypeRegistry:
    """Schemas from ``GET {base_url}/entities/{gts id}``, each kept ``cache_ttl_s`` seconds."""

    def __init__(
        self,
        base_url: str,
        *,
        cache_ttl_s: float = 300.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.base_url = base_url.rstrip("/")
        self.cache_ttl_s = cache_ttl_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def get(self, gts_id: str) -> dict[str, Any]:
        hit = self._cache.get(gts_id)
        now = self._clock()
        if hit is not None and hit[0] > now:
            return hit[1]
        url = f"{self.base_url}/entities/{_checked(gts_id)}"
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(url) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TypeRegistryUnavailable(
                f"type registry {self.base_url} unreachable: {type(exc).__name__}"
            ) from exc
        if status != 200:
            raise UnknownType(f"type {gts_id} is not registered (registry answered HTTP {status})")
        schema = _schema(raw, url)
        self._cache[gts_id] = (now + self.cache_ttl_s, schema)
        return schema

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _schema(raw: bytes, where: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise TypeRegistryUnavailable(f"type registry: {where} is not JSON") from exc
    if not isinstance(doc, dict):
        raise TypeRegistryUnavailable(f"type registry: {where} is not a JSON Schema object")
    return doc


# --- configuration ---------------------------------------------------------------------------


def type_registry(config: TypesConfig, base_dir: Path) -> TypeRegistry:
    """The registry ``config`` describes; a relative ``dir`` is relative to ``base_dir`` (the
    configuration file's directory)."""
    if config.url:
        return HttpTypeRegistry(config.url, cache_ttl_s=config.cache_ttl_s, timeout_s=config.timeout_s)
    if config.dir:
        path = Path(config.dir)
        return DirectoryTypeRegistry(path if path.is_absolute() else base_dir / path)
    return EmptyTypeRegistry()

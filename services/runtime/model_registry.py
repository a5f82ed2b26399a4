"""The Model Registry port: the model catalog (alias -> ``ModelConfig``) that the router plans
and answers ``models.list`` from, and that executors resolve plan deployments against.

Implementations:

* ``ConfigModelRegistry`` (the default): the configuration file's ``models``.
* ``HttpModelRegistry`` (``model_registry: {url, cache_ttl_s}`` in the configuration):
  ``GET {url}/models`` answering ``{"models": {alias: <a models entry of the file>}}``. Each
  entry is validated with the file's ``ModelConfig``; an entry that does not validate, or whose
  deployment names a provider this process's configuration lacks, is skipped with a warning
  (providers, with their URLs and credentials, only ever come from the file). The catalog read
  is kept ``cache_ttl_s`` seconds, then read again in the background at the next look; while
  the registry cannot be read (down, an answer that is not a catalog) the last good catalog
  stays, and before the first good read the file's own ``models`` serve.

``catalog()`` never blocks and returns the same mapping object until the catalog changes, so
callers that derive things from it (the executor's resolved targets) rebuild them only then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Protocol

import httpx
import orjson
import pydantic

from .config import GatewayConfig, ModelConfig

log = logging.getLogger(__name__)

Catalog = Mapping[str, ModelConfig]
#: How long one read of an HTTP registry may take.
TIMEOUT_S = 5.0


class ModelRegistry(Protocol):
    """Where the model catalog comes from."""

    def catalog(self) -> Catalog:
        """The catalog now: alias -> model. Never blocks; the same object until it changes."""
        ...

    async def aclose(self) -> None: ...


class ConfigModelRegistry:
    """The configuration file's ``models``, for the life of the process."""

    def __init__(self, config: GatewayConfig):
        self._models: Catalog = config.models

    def catalog(self) -> Catalog:
        return self._models

    async def aclose(self) -> None:
        return None


class RegistryError(ValueError):
    """An answer of the registry that is not a catalog at all (no entry of it is used)."""


def parse_catalog(
    body: bytes, providers: Collection[str], where: str = "model registry"
) -> dict[str, ModelConfig]:
    """The models of a registry answer. ``RegistryError`` when the answer is not
    ``{"models": {alias: object}}``; single entries that fail validation or name an unknown
    provider are skipped (logged), the others kept."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RegistryError(f"{where}: the answer is not JSON") from exc
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, dict):
        raise RegistryError(f'{where}: the answer has no "models" object')
    out: dict[str, ModelConfig] = {}
    for alias, raw in models.items():
        try:
            model = ModelConfig.model_validate(raw)
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            log.warning("%s: model %r skipped: %s: %s", where, alias, loc or "(entry)", err["msg"])
            continue
        unknown = sorted({d.provider for d in model.deployments} - set(providers))
        if unknown:
            log.warning(
                "%s: model %r skipped: unknown provider %s", where, alias, ", ".join(map(repr, unknown))
            )
            continue
        out[alias] = model
    return out


class HttpModelRegistry:
    """The catalog of ``GET {url}/models``, read at most every ``cache_ttl_s`` seconds.

    ``load()`` reads it now (blocking: start-up only); afterwards ``catalog()`` starts a
    background read once the last one is ``cache_ttl_s`` old (and one is not running already)
    and meanwhile answers from what it has. A failed read keeps the last good catalog and is
    retried after ``cache_ttl_s``."""

    def __init__(
        self,
        url: str,
        *,
        providers: Collection[str],
        initial: Catalog | None = None,
        cache_ttl_s: float = 60.0,
        timeout_s: float = TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.url = url.rstrip("/") + "/models"
        self.cache_ttl_s = cache_ttl_s
        self._providers = frozenset(providers)
        self._timeout = timeout_s
        self._clock = clock
        self._models: Catalog = dict(initial or {})
        self._expires = clock()  # the first look reads the registry
        self.reading: asyncio.Task[bool] | None = None  # the background read in progress, if any
        self.reads = 0  # answers used (for tests and logs)

    def catalog(self) -> Catalog:
        if self.reading is None and self._clock() >= self._expires:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a synchronous caller): keep what we have
                return self._models
            self.reading = loop.create_task(self._refresh_in_background())
        return self._models

    def load(self) -> bool:
        """Read the registry now, blocking (at start-up, before anything is served)."""
        try:
            resp = httpx.get(self.url, timeout=self._timeout)
        except httpx.HTTPError as exc:
            return self._failed(f"unreachable: {type(exc).__name__}: {exc}")
        return self._answer(resp.status_code, resp.content)

    async def refresh(self) -> bool:
        """Read the registry now; whether the answer was used."""
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                resp = await client.get(self.url)
        except httpx.HTTPError as exc:
            return self._failed(f"unreachable: {type(exc).__name__}: {exc}")
        return self._answer(resp.status_code, resp.content)

    async def _refresh_in_background(self) -> bool:
        try:
            return await self.refresh()
        finally:
            self.reading = None

    def _answer(self, status: int, body: bytes) -> bool:
        if status != 200:
            return self._failed(f"answered HTTP {status}")
        try:
            models = parse_catalog(body, self._providers, f"model registry {self.url}")
        except RegistryError as exc:
            return self._failed(str(exc))
        self._expires = self._clock() + self.cache_ttl_s
        self.reads += 1
        if models != self._models:
            self._models = models  # a new object: the catalog changed
            log.info("model registry %s: %d models", self.url, len(models))
        return True

    def _failed(self, why: str) -> bool:
        self._expires = self._clock() + self.cache_ttl_s
        log.warning(
            "model registry %s %s; keeping the last catalog (%d models)", self.url, why, len(self._models)
        )
        return False

    async def aclose(self) -> None:
        task, self.reading = self.reading, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def model_registry(config: GatewayConfig, *, load: bool = True) -> ModelRegistry:
    """The registry ``config`` names; an HTTP one is read once now unless ``load`` is false."""
    rc = config.model_registry
    if rc is None:
        return ConfigModelRegistry(config)
    registry = HttpModelRegistry(
        rc.url, providers=config.providers, initial=config.models, cache_ttl_s=rc.cache_ttl_s
    )
    if load:
        registry.load()
    return registry

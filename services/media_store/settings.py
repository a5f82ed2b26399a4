"""Media-store settings: the shared process ``Settings`` (brokers, topics, S3 endpoint) plus
what only this service has. Built once at start; nothing else here reads the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.runtime.settings import Settings, positive_int


@dataclass(frozen=True)
class MediaStoreSettings:
    """* ``max_in_flight``: requests resolved at once (``LLMGW_MEDIA_STORE_MAX_IN_FLIGHT``, 64):
    each may hold up to ``media.max_bytes`` per media item in memory while it is checked."""

    runtime: Settings = field(default_factory=Settings)
    max_in_flight: int = 64

    @classmethod
    def from_env(
        cls, runtime: Settings | None = None, env: Mapping[str, str] | None = None
    ) -> MediaStoreSettings:
        rt = runtime or Settings.from_env(env)
        e = rt.env if env is None else env
        return cls(
            runtime=rt, max_in_flight=positive_int(e, "LLMGW_MEDIA_STORE_MAX_IN_FLIGHT", cls.max_in_flight)
        )

"""Router settings: the shared process ``Settings`` (brokers, topics, config path) plus the knobs
only the router has. Built once at start (``serve``) and passed down; nothing in the router
reads the environment (STYLE 15)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.runtime.settings import Settings, positive_int


@dataclass(frozen=True)
class RouterSettings:
    """* ``max_in_flight``: requests handled at once by one router (``LLMGW_MAX_IN_FLIGHT``,
    default 512); past it the consumer pauses its partitions."""

    runtime: Settings = field(default_factory=Settings)
    max_in_flight: int = 512

    @classmethod
    def from_env(
        cls, runtime: Settings | None = None, env: Mapping[str, str] | None = None
    ) -> RouterSettings:
        """From ``runtime.env`` (the environment the process read at start), or from ``env``."""
        rt = runtime or Settings.from_env(env)
        e = rt.env if env is None else env
        return cls(runtime=rt, max_in_flight=positive_int(e, "LLMGW_MAX_IN_FLIGHT", cls.max_in_flight))

    @classmethod
    def of(cls, settings: Settings | RouterSettings) -> RouterSettings:
        """Router settings from either kind (plain ``Settings``: from their ``env``)."""
        return settings if isinstance(settings, RouterSettings) else cls.from_env(runtime=settings)

"""Usage sink settings: the shared process ``Settings`` (brokers, topics, S3 endpoint and bucket)
plus the batch knobs only this sink has. Built once at start and passed down; nothing else in
the sink reads the environment (STYLE 15)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.runtime.settings import Settings


@dataclass(frozen=True)
class SinkSettings:
    """* ``batch_records``: a batch closes at this many records of one partition
      (``LLMGW_USAGE_SINK_BATCH_RECORDS``, default 5000),
    * ``batch_ms``: or this long after its first record (``LLMGW_USAGE_SINK_BATCH_MS``, 1000).
    * ``max_in_flight``: records held unacknowledged at once: four full batches, so the open
      batches of several partitions and the ones being written fit.
    """

    runtime: Settings = field(default_factory=Settings)
    batch_records: int = 5000
    batch_ms: int = 1000

    @property
    def max_in_flight(self) -> int:
        return 4 * self.batch_records

    @classmethod
    def from_env(cls, runtime: Settings | None = None, env: Mapping[str, str] | None = None) -> SinkSettings:
        e = os.environ if env is None else env
        kw: dict[str, object] = {"runtime": runtime or Settings.from_env(None if env is None else dict(env))}
        for name, key in (
            ("batch_records", "LLMGW_USAGE_SINK_BATCH_RECORDS"),
            ("batch_ms", "LLMGW_USAGE_SINK_BATCH_MS"),
        ):
            if v := e.get(key):
                if int(v) <= 0:
                    raise ValueError(f"{key} must be > 0, got {v!r}")
                kw[name] = int(v)
        return cls(**kw)  # type: ignore[arg-type]

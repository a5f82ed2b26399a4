"""Audit sink settings: the shared process ``Settings`` (brokers, topics, S3 endpoint and bucket)
plus the batch knobs only this sink has. Built once at start and passed down; nothing else in
the sink reads the environment (STYLE 15)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.runtime.settings import Settings, positive_int


@dataclass(frozen=True)
class SinkSettings:
    """* ``batch_records``: a batch (one object of a partition's chain) closes at this many
      records (``LLMGW_AUDIT_SINK_BATCH_RECORDS``, default 1000),
    * ``batch_ms``: or this long after its first record (``LLMGW_AUDIT_SINK_BATCH_MS``, 500).
    * ``max_in_flight``: records held unacknowledged at once: four full batches.
    """

    runtime: Settings = field(default_factory=Settings)
    batch_records: int = 1000
    batch_ms: int = 500

    @property
    def max_in_flight(self) -> int:
        return 4 * self.batch_records

    @classmethod
    def from_env(cls, runtime: Settings | None = None, env: Mapping[str, str] | None = None) -> SinkSettings:
        """From ``runtime.env`` (the environment the process read at start), or from ``env``."""
        rt = runtime or Settings.from_env(env)
        e = rt.env if env is None else env
        return cls(
            runtime=rt,
            batch_records=positive_int(e, "LLMGW_AUDIT_SINK_BATCH_RECORDS", cls.batch_records),
            batch_ms=positive_int(e, "LLMGW_AUDIT_SINK_BATCH_MS", cls.batch_ms),
        )

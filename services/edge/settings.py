"""Edge settings: the shared process ``Settings`` plus the HTTP knobs only the edge has.

Built once at start (``EdgeSettings.from_env``) and passed down; nothing else in the
edge reads the environment (STYLE 15).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.runtime.settings import Settings, positive_float, positive_int

MiB = 1024 * 1024


@dataclass(frozen=True)
class EdgeSettings:
    """``runtime`` carries host, port, workers, brokers, topics and the config path.

    * ``max_body_bytes``: larger request bodies get 413 (``LLMGW_EDGE_MAX_BODY_BYTES``).
    * ``keepalive_s``: a stream that has sent nothing for this long gets an SSE comment
      ``: keep-alive`` (``LLMGW_EDGE_KEEPALIVE_S``).
    * ``stream_buffer_bytes``: SSE bytes one stream may hold while its HTTP client reads
      slower than the answer arrives; past it the stream is cancelled
      (``LLMGW_EDGE_STREAM_BUFFER_BYTES``).
    * ``shutdown_grace_s``: on SIGTERM, streams in flight get this long to finish; the
      rest end with an error event (``LLMGW_EDGE_SHUTDOWN_GRACE_S``).
    * ``timeout_margin_s``: added to a request's ``total_ms`` (or the config default)
      before the edge stops waiting for its answer.
    """

    runtime: Settings = field(default_factory=Settings)
    max_body_bytes: int = 8 * MiB
    keepalive_s: float = 10.0
    stream_buffer_bytes: int = 1 * MiB
    shutdown_grace_s: int = 10  # whole seconds (uvicorn's timeout_graceful_shutdown)
    timeout_margin_s: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EdgeSettings:
        """From ``env``, by default the environment as ``Settings.from_env`` reads it."""
        rt = Settings.from_env(env)
        e = rt.env
        return cls(
            runtime=rt,
            max_body_bytes=positive_int(e, "LLMGW_EDGE_MAX_BODY_BYTES", cls.max_body_bytes),
            keepalive_s=positive_float(e, "LLMGW_EDGE_KEEPALIVE_S", cls.keepalive_s),
            stream_buffer_bytes=positive_int(e, "LLMGW_EDGE_STREAM_BUFFER_BYTES", cls.stream_buffer_bytes),
            shutdown_grace_s=positive_int(e, "LLMGW_EDGE_SHUTDOWN_GRACE_S", cls.shutdown_grace_s),
        )

    @classmethod
    def of(cls, settings: Settings | EdgeSettings) -> EdgeSettings:
        """Edge settings from either kind (plain ``Settings`` get the edge defaults)."""
        return settings if isinstance(settings, EdgeSettings) else cls(runtime=settings)

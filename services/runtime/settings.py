"""Process settings: the only place that reads the environment (STYLE 15)."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    """Built once at start and passed down.

    ``LLMGW_TOPIC_PREFIX`` prefixes every topic name (tests use a fresh prefix per run).
    ``s3_endpoint`` (``LLMGW_S3_ENDPOINT``) is where the usage and audit ledgers are written,
    by default the local S3 that ``llmgw up`` starts on ``s3_port``; ``usage_bucket`` and
    ``audit_bucket`` (``LLMGW_USAGE_BUCKET``, ``LLMGW_AUDIT_BUCKET``) are created when missing.
    ``request_log`` (``LLMGW_REQUEST_LOG``, ``0`` turns it off): one JSON line per request outcome
    on standard output (``services/runtime/request_log.py``).
    ``provider_trust_env`` (``LLMGW_PROVIDER_TRUST_ENV``) and ``provider_max_connections``
    (``LLMGW_PROVIDER_MAX_CONNECTIONS``): the executor's provider client honours the proxy
    variables, and keeps at most that many connections open.
    ``fast_fetch`` (``LLMGW_FAST_FETCH``, ``0`` turns it off): the gateway's services fetch with
    ``services/runtime/fetching.py``'s changes to aiokafka.
    """

    bootstrap_servers: str = "127.0.0.1:9092"
    config_path: Path = ROOT / "config" / "demo.yaml"
    topics_path: Path = ROOT / "topics.yaml"
    topic_prefix: str = ""
    state_dir: Path = ROOT / ".llmgw"
    instance_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    )
    log_level: str = "INFO"
    max_in_flight: int = 512
    edge_host: str = "127.0.0.1"
    edge_port: int = 8080
    edge_workers: int = 1
    emulator_port: int = 8100
    s3_port: int = 9000
    kafka_port: int = 9092
    external_kafka: bool = False
    provider_trust_env: bool = False
    provider_max_connections: int = 512
    otel_console: bool = False
    s3_endpoint: str | None = None
    usage_bucket: str = "llmgw-usage"
    audit_bucket: str = "llmgw-audit"
    request_log: bool = True
    fast_fetch: bool = True

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        kw: dict[str, object] = {}
        if v := e.get("KAFKA_BOOTSTRAP_SERVERS"):
            kw["bootstrap_servers"] = v
            kw["external_kafka"] = True
        elif v := e.get("LLMGW_KAFKA_PORT"):
            kw["kafka_port"] = int(v)
            kw["bootstrap_servers"] = f"127.0.0.1:{v}"
        if v := e.get("LLMGW_CONFIG"):
            kw["config_path"] = Path(v)
        if v := e.get("LLMGW_TOPICS"):
            kw["topics_path"] = Path(v)
        if v := e.get("LLMGW_TOPIC_PREFIX"):
            kw["topic_prefix"] = v
        if v := e.get("LLMGW_STATE_DIR"):
            kw["state_dir"] = Path(v)
        if v := e.get("LLMGW_INSTANCE_ID"):
            kw["instance_id"] = v
        if v := e.get("LLMGW_LOG_LEVEL"):
            kw["log_level"] = v
        if v := e.get("LLMGW_MAX_IN_FLIGHT"):
            kw["max_in_flight"] = int(v)
        for name, key in (
            ("edge_port", "LLMGW_EDGE_PORT"),
            ("edge_workers", "LLMGW_EDGE_WORKERS"),
            ("emulator_port", "LLMGW_EMULATOR_PORT"),
            ("s3_port", "LLMGW_S3_PORT"),
        ):
            if v := e.get(key):
                kw[name] = int(v)
        if e.get("LLMGW_OTEL_CONSOLE") in ("1", "true", "yes"):
            kw["otel_console"] = True
        if e.get("LLMGW_PROVIDER_TRUST_ENV") in ("1", "true", "yes"):
            kw["provider_trust_env"] = True
        if v := e.get("LLMGW_PROVIDER_MAX_CONNECTIONS"):
            if not v.isdigit() or int(v) < 1:
                raise ValueError(f"LLMGW_PROVIDER_MAX_CONNECTIONS must be a whole number > 0, got {v!r}")
            kw["provider_max_connections"] = int(v)
        if v := e.get("LLMGW_EDGE_HOST"):
            kw["edge_host"] = v
        for name, key in (
            ("s3_endpoint", "LLMGW_S3_ENDPOINT"),
            ("usage_bucket", "LLMGW_USAGE_BUCKET"),
            ("audit_bucket", "LLMGW_AUDIT_BUCKET"),
        ):
            if v := e.get(key):
                kw[name] = v
        if e.get("LLMGW_REQUEST_LOG", "").lower() in ("0", "false", "no", "off"):
            kw["request_log"] = False
        if e.get("LLMGW_FAST_FETCH", "").lower() in ("0", "false", "no", "off"):
            kw["fast_fetch"] = False
        return cls(**kw)  # type: ignore[arg-type]

    @property
    def s3_url(self) -> str:
        """The S3 endpoint the ledgers use: ``LLMGW_S3_ENDPOINT``, else the local one."""
        return self.s3_endpoint or f"http://127.0.0.1:{self.s3_port}"

    def secret(self, env_name: str | None) -> str | None:
        """A provider secret, by the env var name the config refers to."""
        return os.environ.get(env_name) if env_name else None

"""Process settings: the only place that reads the environment (STYLE 15).

``Settings.from_env()`` reads ``os.environ`` once, at start, and keeps what it read in
``Settings.env``; everything else that depends on the environment takes it from there: the
services' own settings (``services/<svc>/settings.py``), the ``${NAME}`` references of the
config file (``load_config(path, settings.env)``), provider secrets (``Settings.secret``) and
the environment of the processes ``llmgw up`` starts. ``tests/unit/runtime/test_settings.py``
fails when another module under ``services/`` reads the environment.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, TypeVar

ROOT = Path(__file__).resolve().parents[2]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
_LEVELS: tuple[LogLevel, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_N = TypeVar("_N", int, float)
_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


def _instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Settings:
    """Built once at start and passed down.

    ``LLMGW_TOPIC_PREFIX`` prefixes every topic name (tests use a fresh prefix per run).
    ``s3_endpoint`` (``LLMGW_S3_ENDPOINT``) is where the usage and audit ledgers are written,
    by default the local S3 that ``llmgw up`` starts on ``s3_port``; ``usage_bucket`` and
    ``audit_bucket`` (``LLMGW_USAGE_BUCKET``, ``LLMGW_AUDIT_BUCKET``) are created when missing.
    ``request_log`` (``LLMGW_REQUEST_LOG``, ``0`` turns it off): one JSON line per request outcome
    on standard output (``services/runtime/request_log.py``).
    ``ready_file`` (``LLMGW_READY_FILE``): written once the service serves (``llmgw up`` waits
    for it). ``cache_dir`` (``LLMGW_CACHE``): where ``llmgw up`` keeps the Kafka jars.
    ``env``: the environment as read at start (never printed: it holds secrets).
    """

    bootstrap_servers: str = "127.0.0.1:9092"
    config_path: Path = ROOT / "config" / "demo.yaml"
    topics_path: Path = ROOT / "topics.yaml"
    topic_prefix: str = ""
    state_dir: Path = ROOT / ".llmgw"
    instance_id: str = field(default_factory=_instance_id)
    log_level: LogLevel = "INFO"
    edge_host: str = "127.0.0.1"
    edge_port: int = 8080
    edge_workers: int = 1
    emulator_port: int = 8100
    s3_port: int = 9000
    kafka_port: int = 9092
    external_kafka: bool = False
    otel_console: bool = False
    s3_endpoint: str | None = None
    usage_bucket: str = "llmgw-usage"
    audit_bucket: str = "llmgw-audit"
    request_log: bool = True
    ready_file: Path | None = None
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "llmgw")
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``env`` (by default the process's environment, read here and only here).
        A value that does not parse is a ``ValueError`` naming the variable."""
        e: Mapping[str, str] = MappingProxyType(dict(os.environ if env is None else env))
        bootstrap = e.get("KAFKA_BOOTSTRAP_SERVERS")
        kafka_port = positive_int(e, "LLMGW_KAFKA_PORT", cls.kafka_port)
        return cls(
            bootstrap_servers=bootstrap or f"127.0.0.1:{kafka_port}",
            external_kafka=bool(bootstrap),
            kafka_port=kafka_port,
            config_path=_path(e, "LLMGW_CONFIG") or cls.config_path,
            topics_path=_path(e, "LLMGW_TOPICS") or cls.topics_path,
            topic_prefix=e.get("LLMGW_TOPIC_PREFIX") or cls.topic_prefix,
            state_dir=_path(e, "LLMGW_STATE_DIR") or cls.state_dir,
            instance_id=e.get("LLMGW_INSTANCE_ID") or _instance_id(),
            log_level=_log_level(e),
            edge_host=e.get("LLMGW_EDGE_HOST") or cls.edge_host,
            edge_port=positive_int(e, "LLMGW_EDGE_PORT", cls.edge_port),
            edge_workers=positive_int(e, "LLMGW_EDGE_WORKERS", cls.edge_workers),
            emulator_port=positive_int(e, "LLMGW_EMULATOR_PORT", cls.emulator_port),
            s3_port=positive_int(e, "LLMGW_S3_PORT", cls.s3_port),
            otel_console=flag(e, "LLMGW_OTEL_CONSOLE", cls.otel_console),
            s3_endpoint=e.get("LLMGW_S3_ENDPOINT") or None,
            usage_bucket=e.get("LLMGW_USAGE_BUCKET") or cls.usage_bucket,
            audit_bucket=e.get("LLMGW_AUDIT_BUCKET") or cls.audit_bucket,
            request_log=flag(e, "LLMGW_REQUEST_LOG", cls.request_log),
            ready_file=_path(e, "LLMGW_READY_FILE"),
            cache_dir=_path(e, "LLMGW_CACHE") or Path.home() / ".cache" / "llmgw",
            env=e,
        )

    @property
    def s3_url(self) -> str:
        """The S3 endpoint the ledgers use: ``LLMGW_S3_ENDPOINT``, else the local one."""
        return self.s3_endpoint or f"http://127.0.0.1:{self.s3_port}"

    def secret(self, env_name: str | None) -> str | None:
        """A provider secret, by the env var name the config refers to (from ``env``)."""
        return self.env.get(env_name) if env_name else None


def positive_int(env: Mapping[str, str], key: str, default: int) -> int:
    """``env[key]`` as an integer > 0 (``default`` when unset or empty)."""
    return _positive(env, key, default, int)


def positive_float(env: Mapping[str, str], key: str, default: float) -> float:
    """``env[key]`` as a number > 0 (``default`` when unset or empty)."""
    return _positive(env, key, default, float)


def _positive(env: Mapping[str, str], key: str, default: _N, conv: type[_N]) -> _N:
    if not (v := env.get(key)):
        return default
    try:
        value = conv(v)
    except ValueError:
        raise ValueError(f"{key} must be a number, got {v!r}") from None
    if value <= 0:
        raise ValueError(f"{key} must be > 0, got {v!r}")
    return value


def flag(env: Mapping[str, str], key: str, default: bool) -> bool:
    """``env[key]`` as a switch: ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``."""
    if not (v := env.get(key, "").strip().lower()):
        return default
    if v in _ON:
        return True
    if v in _OFF:
        return False
    raise ValueError(f"{key} must be one of {'/'.join(_ON + _OFF)}, got {env[key]!r}")


def _path(env: Mapping[str, str], key: str) -> Path | None:
    return Path(v) if (v := env.get(key)) else None


def _log_level(env: Mapping[str, str]) -> LogLevel:
    v = env.get("LLMGW_LOG_LEVEL", "").upper() or "INFO"
    for level in _LEVELS:
        if v == level:
            return level
    raise ValueError(f"LLMGW_LOG_LEVEL must be one of {', '.join(_LEVELS)}, got {v!r}")

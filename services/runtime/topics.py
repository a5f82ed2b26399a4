"""Topic names and their declared configuration, read from topics.yaml (STYLE 10)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

TOPIC_ALREADY_EXISTS = 36


class TopicConfigurationMismatch(RuntimeError):
    """An existing topic differs from topics.yaml in partitions or cleanup policy."""


@dataclass(frozen=True)
class TopicSpec:
    role: str
    name: str
    partitions: int
    cleanup_policy: str
    retention_ms: int | None = None
    config: dict[str, str] = field(default_factory=dict)

    def topic_config(self) -> dict[str, str]:
        cfg = {"cleanup.policy": self.cleanup_policy, **{k: str(v) for k, v in self.config.items()}}
        if self.retention_ms is not None:
            cfg["retention.ms"] = str(self.retention_ms)
        return cfg


class Topics:
    """Role -> topic spec. ``topics.requests`` is the spec with role ``requests``."""

    def __init__(self, specs: dict[str, TopicSpec]):
        self._specs = specs

    @classmethod
    def load(cls, path: Path, prefix: str = "") -> Topics:
        doc: dict[str, Any] = yaml.safe_load(path.read_text())
        specs = {}
        for role, t in doc["topics"].items():
            specs[role] = TopicSpec(
                role=role,
                name=prefix + t["name"],
                partitions=int(t["partitions"]),
                cleanup_policy=t["cleanup_policy"],
                retention_ms=t.get("retention_ms"),
                config=dict(t.get("config") or {}),
            )
        return cls(specs)

    def __getattr__(self, role: str) -> TopicSpec:
        try:
            return self._specs[role]
        except KeyError:
            raise AttributeError(f"no topic with role {role!r} in topics.yaml") from None

    def __iter__(self) -> Iterator[TopicSpec]:
        return iter(self._specs.values())

    def by_name(self, name: str) -> TopicSpec | None:
        return next((s for s in self._specs.values() if s.name == name), None)


async def apply_topics(
    bootstrap: str, topics: Topics, *, create: bool = True, only: list[str] | None = None
) -> list[str]:
    """Create missing topics (when ``create``) and check existing ones.

    Returns the names created. Raises TopicConfigurationMismatch naming every
    difference in partitions or cleanup policy.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        wanted = [t for t in topics if only is None or t.role in only or t.name in only]
        existing = set(await admin.list_topics())  # (describing a missing topic may auto-create it)
        missing = [t for t in wanted if t.name not in existing]
        present = [t for t in wanted if t not in missing]
        problems: list[str] = []
        created: list[str] = []
        if missing and not create:
            problems += [f"topic {t.name} is missing (run `llmgw topics apply`)" for t in missing]
        elif missing:
            resp = await admin.create_topics(
                [NewTopic(t.name, t.partitions, 1, topic_configs=t.topic_config()) for t in missing]
            )
            errors = {name: (code, msg) for name, code, msg in resp.topic_errors}
            for t in missing:
                code, msg = errors.get(t.name, (0, None))
                if code == 0:
                    created.append(t.name)
                elif code == TOPIC_ALREADY_EXISTS:  # created meanwhile by someone else: check it
                    present.append(t)
                else:
                    problems.append(f"creating topic {t.name} failed: error {code}: {msg}")
        if present:
            problems += await _differences(admin, present)
        if problems:
            raise TopicConfigurationMismatch("; ".join(problems))
        return created
    finally:
        await admin.close()


async def _differences(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> list[str]:
    problems = []
    for _ in range(50):  # a topic created a moment ago may show no partitions yet
        described = await admin.describe_topics([t.name for t in specs])
        parts = {d["topic"]: len(d["partitions"]) for d in described}
        if all(parts.get(t.name) for t in specs):
            break
        await asyncio.sleep(0.1)
    resources = [ConfigResource(ConfigResourceType.TOPIC, t.name) for t in specs]
    configs: dict[str, dict[str, str]] = {}
    for resp in await admin.describe_configs(resources):
        for res in resp.resources:
            # (error_code, error_message, resource_type, resource_name, config_entries)
            name, entries = res[3], res[4]
            configs[name] = {e[0]: e[1] for e in entries}
    for t in specs:
        if parts.get(t.name) != t.partitions:
            problems.append(
                f"topic {t.name} has {parts.get(t.name)} partitions, topics.yaml says {t.partitions}"
            )
        policy = configs.get(t.name, {}).get("cleanup.policy")
        if policy != t.cleanup_policy:
            problems.append(
                f"topic {t.name} has cleanup.policy={policy}, topics.yaml says {t.cleanup_policy}"
            )
    return problems

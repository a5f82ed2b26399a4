from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.runtime.kafka import Publisher
from services.runtime.topics import Topics, apply_topics

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def topics(kafka_bootstrap: str, topic_prefix: str) -> Topics:
    t = Topics.load(ROOT / "topics.yaml", topic_prefix)
    await apply_topics(
        kafka_bootstrap,
        t,
        only=[
            "requests",
            "usage",
            "exec",
            "dlq",
            "replies",
            "results",
            "audit",
            "control",
            "realtime_sessions",
        ],
    )
    return t


@pytest.fixture
async def publisher(kafka_bootstrap: str) -> AsyncIterator[Publisher]:
    async with Publisher(kafka_bootstrap) as p:
        yield p

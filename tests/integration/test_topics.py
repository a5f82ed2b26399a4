from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.runtime.topics import TopicConfigurationMismatch, Topics, apply_topics

ROOT = Path(__file__).resolve().parents[2]


async def test_apply_creates_then_is_idempotent(kafka_bootstrap, topic_prefix):
    t = Topics.load(ROOT / "topics.yaml", topic_prefix)
    created = await apply_topics(kafka_bootstrap, t)
    assert sorted(created) == sorted(s.name for s in t)
    assert await apply_topics(kafka_bootstrap, t) == []


async def test_mismatch_names_the_difference(kafka_bootstrap, topic_prefix):
    t = Topics.load(ROOT / "topics.yaml", topic_prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics(
        [
            NewTopic(t.requests.name, 3, 1),
            NewTopic(t.jobs.name, t.jobs.partitions, 1, topic_configs={"cleanup.policy": "delete"}),
        ]
    )
    await admin.close()
    with pytest.raises(TopicConfigurationMismatch) as exc:
        await apply_topics(kafka_bootstrap, t)
    msg = str(exc.value)
    assert f"topic {t.requests.name} has 3 partitions, topics.yaml says 12" in msg
    assert f"topic {t.jobs.name} has cleanup.policy=delete, topics.yaml says compact" in msg


async def test_check_only_reports_missing(kafka_bootstrap, topic_prefix):
    t = Topics.load(ROOT / "topics.yaml", topic_prefix)
    with pytest.raises(TopicConfigurationMismatch, match="is missing"):
        await apply_topics(kafka_bootstrap, t, create=False)

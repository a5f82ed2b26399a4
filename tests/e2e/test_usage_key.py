"""The usage record names the API key a request came with (its name, never the key)."""

from __future__ import annotations

import httpx

from services.contracts.events import UsageRecorded, new_id

from .helpers import TopicTail


async def test_an_edge_requests_usage_names_its_api_key(edge_url, stack_settings):
    rid = f"key-{new_id()}"
    body = {"model": "demo-openai", "messages": [{"role": "user", "content": "hi"}]}
    async with TopicTail(
        stack_settings.bootstrap_servers, f"{stack_settings.topic_prefix}llm.usage"
    ) as usage:
        async with httpx.AsyncClient(base_url=edge_url, timeout=30) as http:
            r = await http.post(
                "/v1/chat/completions",
                json=body,
                headers={"authorization": "Bearer sk-llmgw-demo", "x-request-id": rid},
            )
        assert r.status_code == 200, r.text
        recs = await usage.until(lambda rs: any(rid.encode() in x.value for x in rs))
    u = UsageRecorded.model_validate_json(next(x.value for x in recs if rid.encode() in x.value))
    assert (
        u.api_key == "demo key"
        and "sk-llmgw" not in next(x.value for x in recs if rid.encode() in x.value).decode()
    )

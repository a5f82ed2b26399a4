"""``audit_content``: text in audit records only for a tenant whose policy includes it."""

from __future__ import annotations

from pathlib import Path

from services.contracts.events import ChatRequested, EmbedRequested, Message
from services.runtime.audit import audit_content
from services.runtime.config import load_config

CONFIG = """
providers:
  p: {kind: openai, base_url: "http://p.invalid/v1"}
models:
  m: {deployments: [{provider: p, model: x}]}
tenants:
  open: {audit: {include_content: true}}
  closed: {}
"""


def test_only_the_tenant_whose_policy_says_so_gets_content(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(CONFIG)
    config = load_config(path, env={})
    msgs = [Message(role="user", content="secret plans")]
    chat = {"request_id": "r1", "model": "m", "messages": msgs}
    opened = audit_content(config, ChatRequested(tenant_id="open", **chat), "the answer")
    assert opened is not None and opened.messages == msgs and opened.completion == "the answer"
    assert audit_content(config, ChatRequested(tenant_id="closed", **chat), "the answer") is None
    assert audit_content(config, ChatRequested(tenant_id="not-configured", **chat)) is None
    embed = audit_content(
        config, EmbedRequested(request_id="r2", tenant_id="open", model="m", input=["a", "b"])
    )
    assert embed is not None and embed.input == ["a", "b"] and embed.messages is None

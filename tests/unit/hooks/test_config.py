"""The ``hooks`` / ``plugins`` / ``audit`` block of a tenant: names resolve at load (or the file is
refused naming them), built-in options are checked, the demo's ``guarded`` tenant, and the
chains the services build from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.runtime.config import ConfigError, hash_key, load_config
from services.runtime.hooks import TenantHooks

ROOT = Path(__file__).resolve().parents[3]
BASE = """
providers:
  p: {kind: openai, base_url: "http://p.invalid/v1"}
models:
  m: {deployments: [{provider: p, model: x}]}
tenants:
"""


def load(tmp_path: Path, tenants: str):
    path = tmp_path / "gw.yaml"
    path.write_text(BASE + tenants)
    return load_config(path, env={})


def test_hooks_with_options_and_bare_names(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
  t:
    hooks:
      - pii_redaction
      - {name: blocklist, terms: [forbidden-topic], requests: false}
    plugins: {usage: noop}
    audit: {include_content: true}
""",
    )
    t = config.tenants["t"]
    assert [h.name for h in t.hooks] == ["pii_redaction", "blocklist"]
    assert t.hooks[1].options() == {"terms": ["forbidden-topic"], "requests": False}
    assert (t.plugins.usage, t.plugins.audit, t.audit.include_content) == ("noop", "s3", True)
    hooks = TenantHooks.from_config(config)
    assert [n for n, _ in hooks.pre("t").pre] == ["pii_redaction"]  # type: ignore[union-attr]
    assert [n for n, _ in hooks.post("t").post] == ["blocklist"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("tenants", "message"),
    [
        (
            "  t: {hooks: [{name: nosuch}]}\n",
            r"tenants\.t\.hooks\.0: unknown hook 'nosuch' \(known: blocklist, ",
        ),
        ("  t: {hooks: [{name: blocklist}]}\n", r"tenants\.t\.hooks\.0: .*give terms or patterns"),
        (
            "  t: {hooks: [{name: blocklist, terms: [a], colour: red}]}\n",
            r"tenants\.t\.hooks\.0: .*unexpected keyword argument 'colour'",
        ),
        ("  t: {hooks: [{name: pii_redaction, kinds: [ssn]}]}\n", r"kinds: unknown 'ssn'"),
        (
            "  t: {plugins: {usage: acme-billing}}\n",
            r"tenants\.t\.plugins\.usage: unknown usage plugin 'acme-billing'",
        ),
        (
            "  t: {plugins: {audit: nope}}\n",
            r"tenants\.t\.plugins\.audit: unknown audit plugin 'nope' \(known: noop, s3",
        ),
        ("  unknown: {}\n", r"tenants\.unknown: the name is reserved"),
        ("  t: {audit: {include_content: true, extra: 1}}\n", r"tenants\.t\.audit\.extra"),
    ],
)
def test_bad_entries_stop_the_load_naming_them(tmp_path: Path, tenants: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, tenants)


def test_demo_tenant_guarded() -> None:
    config = load_config(ROOT / "config" / "demo.yaml", env={})
    guarded = config.tenants["guarded"]
    assert [k.sha256 for k in guarded.api_keys] == [hash_key("sk-llmgw-guarded")]
    lines = (ROOT / "config" / "demo.yaml").read_text().splitlines()
    assert not any(
        "sk-llmgw-guarded" in line.split("#")[0] for line in lines
    )  # only its hash, outside comments
    assert [(h.name, h.options()) for h in guarded.hooks] == [
        ("pii_redaction", {}),
        ("blocklist", {"terms": ["forbidden-topic"]}),
    ]
    hooks = TenantHooks.from_config(config)
    assert hooks.pre("demo") is None and hooks.post("demo") is None  # no hooks, no per-request work
    assert [n for n, _ in hooks.pre("guarded").pre] == ["pii_redaction", "blocklist"]  # type: ignore[union-attr]
    assert [n for n, _ in hooks.post("guarded").post] == ["blocklist"]  # type: ignore[union-attr]
    assert hooks.pre("screened") is None
    assert [n for n, _ in hooks.post("screened").post] == ["pii_redaction", "blocklist"]  # type: ignore[union-attr]

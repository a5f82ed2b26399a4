from pathlib import Path

import pytest

from services.runtime.config import ConfigError, hash_key, load_config

ROOT = Path(__file__).resolve().parents[3]


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_demo_config_keys_are_hashed():
    cfg = load_config(ROOT / "config" / "demo.yaml", env={})
    assert cfg.key_index()[hash_key("sk-llmgw-demo")] == ("demo", "demo-user")
    assert "sk-llmgw-demo" not in (ROOT / "config" / "demo.yaml").read_text().split("#")[0]


def test_env_expansion(tmp_path):
    cfg = load_config(ROOT / "config" / "demo.yaml", env={"LLMGW_EMULATOR_URL": "http://h:1"})
    assert cfg.providers["emulator-openai"].base_url == "http://h:1/v1"


MINIMAL = """
providers: {p: {kind: openai, base_url: http://x/v1}}
models: {m: {deployments: [{provider: p, model: up}]}}
"""


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"models\.m\.deploymnets: Extra inputs are not permitted"):
        load_config(
            write(tmp_path, "providers: {p: {kind: openai, base_url: u}}\nmodels: {m: {deploymnets: []}}"), {}
        )


def test_unknown_provider_reference(tmp_path):
    with pytest.raises(ConfigError, match=r"models\.m\.deployments\.0\.provider: unknown provider 'q'"):
        load_config(write(tmp_path, MINIMAL.replace("provider: p", "provider: q")), {})


def test_bad_kind_and_bad_hash(tmp_path):
    with pytest.raises(ConfigError, match=r"providers\.p\.kind"):
        load_config(write(tmp_path, MINIMAL.replace("kind: openai", "kind: cohere")), {})
    bad = MINIMAL + "tenants: {t: {api_keys: [{sha256: notahash, user: u}]}}\n"
    with pytest.raises(ConfigError, match=r"tenants\.t\.api_keys\.0\.sha256"):
        load_config(write(tmp_path, bad), {})


def test_missing_env_var_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="NOPE_VAR"):
        load_config(write(tmp_path, MINIMAL.replace("http://x/v1", "${NOPE_VAR}")), env={})
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.yaml", {})


def test_not_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "a: [b"), {})

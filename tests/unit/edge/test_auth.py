"""API keys: matched by SHA-256 hash only; the tenant and user come from the key."""

from __future__ import annotations

import pytest

from services.contracts.errors import AuthenticationError
from services.edge.auth import KeyIndex, bearer_token
from services.runtime.config import GatewayConfig, hash_key


def test_demo_keys_hash_to_the_configured_hashes(demo_config):
    assert hash_key("sk-llmgw-demo") == "07d4df61911c7f31f4f0efcc5c8db2bc7c8b73f34a368b96a2c5687703aff7d1"
    assert demo_config.key_index()[hash_key("sk-llmgw-restricted")] == ("restricted", "restricted-user")


def test_authenticate(demo_config):
    keys = KeyIndex(demo_config)
    caller = keys.authenticate(b"Bearer sk-llmgw-demo")
    assert (caller.tenant_id, caller.user_id) == ("demo", "demo-user")
    assert keys.authenticate(b"bearer   sk-llmgw-restricted").tenant_id == "restricted"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing API key"),
        (b"", "missing API key"),
        (b"Basic c2stbGxtZ3ctZGVtbw==", "malformed Authorization header"),
        (b"Bearer", "malformed Authorization header"),
        (b"Bearer sk-llmgw-demo-x", "invalid API key"),
        (b"Bearer 07d4df61911c7f31f4f0efcc5c8db2bc7c8b73f34a368b96a2c5687703aff7d1", "invalid API key"),
    ],
)
def test_rejections(demo_config, header, message):
    with pytest.raises(AuthenticationError, match=message) as exc:
        KeyIndex(demo_config).authenticate(header)
    assert exc.value.http_status == 401


def test_index_holds_no_plain_keys():
    config = GatewayConfig.model_validate(
        {
            "providers": {"p": {"kind": "openai", "base_url": "http://x"}},
            "models": {"m": {"deployments": [{"provider": "p", "model": "u"}]}},
            "tenants": {
                "a": {"api_keys": [{"sha256": hash_key("key-a"), "user": "ua"}]},
                "b": {"api_keys": [{"sha256": hash_key("key-b"), "user": "ub"}]},
            },
        }
    )
    keys = KeyIndex(config)
    assert "key-a" not in repr(vars(keys))
    assert keys.authenticate(b"Bearer key-b").tenant_id == "b"
    assert bearer_token(b"Bearer key-a") == b"key-a"

"""The executor resolves plan deployments from its own configuration only."""

from __future__ import annotations

import pytest

from services.contracts.events import Deployment
from services.executor.targets import Targets
from services.runtime.config import load_config
from services.runtime.kafka import DeadLetter
from services.runtime.settings import ROOT


@pytest.fixture(scope="module")
def targets() -> Targets:
    return Targets(load_config(ROOT / "config" / "demo.yaml", env={}))


def test_a_known_deployment_resolves_to_the_configured_url_secret_and_price(targets: Targets):
    t = targets.one(Deployment(alias="demo-openai", provider="emulator-openai", upstream_model="gpt-emu"))
    assert (t.kind, t.base_url, t.api_key_env) == ("openai", "http://127.0.0.1:8100/v1", "EMULATOR_API_KEY")
    assert t.price.input_per_mtok == 0.15 and t.label == "demo-openai/emulator-openai"


@pytest.mark.parametrize(
    ("alias", "provider", "model", "named"),
    [
        ("demo-openai", "evil-provider", "gpt-emu", "provider 'evil-provider'"),
        (
            "demo-openai",
            "emulator-openai",
            "gpt-5-from-an-event",
            "demo-openai/emulator-openai/gpt-5-from-an-event",
        ),
        ("no-such-alias", "emulator-openai", "gpt-emu", "no-such-alias/emulator-openai/gpt-emu"),
        ("demo-openai", "emulator-anthropic", "gpt-emu", "demo-openai/emulator-anthropic/gpt-emu"),
    ],
)
def test_anything_the_configuration_does_not_have_is_dead_lettered_naming_it(
    targets, alias, provider, model, named
):
    with pytest.raises(DeadLetter, match=named.replace("/", "/")):
        targets.one(Deployment(alias=alias, provider=provider, upstream_model=model))

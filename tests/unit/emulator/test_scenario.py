from __future__ import annotations

import pytest

from services.emulator.scenario import DEFAULT, Scenario, ScenarioError, parse_pairs, resolve, split_model


def test_plain_model_has_default_scenario():
    name, scenario = resolve("gpt-emu")
    assert name == "gpt-emu"
    assert scenario == Scenario(key="|")
    assert (scenario.tokens, scenario.ttfb_ms, scenario.status, scenario.disconnect_after) == (8, 0, None, None)
    assert DEFAULT.tokens == 8


def test_model_suffix_is_parsed():
    name, scenario = resolve("gpt-emu@tokens=20,chunk_delay_ms=10,ttfb_ms=2.5,tool=1,cached=4")
    assert name == "gpt-emu"
    assert scenario.tokens == 20
    assert scenario.chunk_delay_ms == 10.0
    assert scenario.ttfb_ms == 2.5
    assert scenario.tool is True
    assert scenario.cached == 4


def test_header_wins_on_conflicts():
    _, scenario = resolve("m@tokens=5,status=429", "tokens=7, hang=0")
    assert scenario.tokens == 7
    assert scenario.status == 429
    assert scenario.hang is False


def test_header_only():
    name, scenario = resolve("m", "disconnect_after=2,fail_first=3,key=abc")
    assert name == "m"
    assert (scenario.disconnect_after, scenario.fail_first, scenario.key) == (2, 3, "abc")
    assert scenario.fail_status() == 500


def test_default_key_is_whole_scenario_string():
    _, a = resolve("m@fail_first=1")
    _, b = resolve("m@fail_first=1", "tokens=2")
    assert a.key and b.key and a.key != b.key


def test_at_sign_in_model_name_without_scenario():
    assert split_model("claude-x@20240620") == ("claude-x@20240620", "")
    assert split_model("claude-x@20240620@tokens=3") == ("claude-x@20240620", "tokens=3")
    assert split_model("m@") == ("m@", "")


def test_unknown_key_is_named():
    with pytest.raises(ScenarioError, match="'bogus'"):
        resolve("m@bogus=1")
    with pytest.raises(ScenarioError, match="'nope'"):
        resolve("m", "nope=2")


@pytest.mark.parametrize(
    "spec",
    ["tokens=x", "tokens=-1", "status=200", "status=abc", "hang=maybe", "ttfb_ms=-3", "tokens"],
)
def test_bad_values(spec):
    with pytest.raises(ScenarioError):
        resolve("m", spec)


def test_parse_pairs_skips_empty_items_and_strips():
    assert parse_pairs(" tokens = 3 ,, key=a b ") == {"tokens": "3", "key": "a b"}
    assert parse_pairs("") == {}

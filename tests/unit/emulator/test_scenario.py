from __future__ import annotations

import pytest

from services.emulator.scenario import DEFAULT, Scenario, ScenarioError, parse_pairs, resolve, split_model


def test_plain_model_has_default_scenario():
    name, scenario = resolve("gpt-emu")
    assert name == "gpt-emu"
    assert scenario == Scenario(key="|")
    assert (scenario.tokens, scenario.ttfb_ms, scenario.status, scenario.disconnect_after) == (
        8,
        0,
        None,
        None,
    )
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


def test_tool_structured_and_embedding_keys():
    _, scenario = resolve("m@tools=3,schema_violation=1,max_inputs=7,fail_input=bad text=x")
    assert (scenario.tools, scenario.schema_violation, scenario.max_inputs) == (3, True, 7)
    assert scenario.fail_input == "bad text=x"
    assert scenario.tool_calls == 3
    assert resolve("m@tool=1")[1].tool_calls == 1
    assert resolve("m@tool=1,tools=4")[1].tool_calls == 4
    assert resolve("m")[1].tool_calls == 0
    defaults = resolve("m")[1]
    assert (defaults.max_inputs, defaults.fail_input, defaults.schema_violation) == (None, None, False)


@pytest.mark.parametrize(
    "spec", ["tools=-1", "tools=1025", "tools=two", "max_inputs=0", "max_inputs=x", "schema_violation=maybe"]
)
def test_bad_values_of_new_keys(spec):
    with pytest.raises(ScenarioError, match=f"'{spec.split('=')[0]}'"):
        resolve("m", spec)

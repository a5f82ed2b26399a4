"""Realtime turns' usage and price, as pure functions."""

from __future__ import annotations

from services.contracts.events import Price
from services.executor.realtime import base_model, turn_price, turn_usage, ws_url
from services.executor.targets import Target

DONE_USAGE = {
    "total_tokens": 60,
    "input_tokens": 40,
    "output_tokens": 20,
    "input_token_details": {
        "text_tokens": 10,
        "audio_tokens": 30,
        "cached_tokens": 8,
        "cached_tokens_details": {"text_tokens": 8, "audio_tokens": 0},
    },
    "output_token_details": {"text_tokens": 5, "audio_tokens": 15},
}


def test_turn_usage_keeps_text_and_audio_details():
    u = turn_usage(DONE_USAGE)
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens) == (40, 20, 60, 8)
    assert u.units == {
        "input_text_tokens": 10.0,
        "input_audio_tokens": 30.0,
        "output_text_tokens": 5.0,
        "output_audio_tokens": 15.0,
        "cached_audio_tokens": 0.0,
    }


def test_dated_model_names_are_priced_as_their_base_name():
    assert base_model("gpt-realtime-2025-08-28") == "gpt-realtime"
    assert base_model("gpt-realtime") == "gpt-realtime"
    own = Price(input_per_mtok=1.0)
    target = Target("a", "p", "openai", "http://x/v1", "gpt-realtime-mini", price=own)
    family = Price(input_per_mtok=4.0)
    prices = {"gpt-realtime": family, "gpt-realtime-mini": own}
    assert turn_price(target, prices, "gpt-realtime-2025-08-28") is family
    assert turn_price(target, prices, "gpt-realtime") is family
    assert turn_price(target, prices, "unknown-model-2025-01-01") is own
    assert turn_price(target, prices, None) is own


def test_ws_url_from_the_http_base_url():
    assert ws_url("http://127.0.0.1:8100/v1", "m") == "ws://127.0.0.1:8100/v1/realtime?model=m"
    assert ws_url("https://api.openai.com/v1/", "m") == "wss://api.openai.com/v1/realtime?model=m"

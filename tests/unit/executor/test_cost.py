from services.contracts.events import Price, Usage
from services.executor.handlers import cost_usd
from services.executor.targets import Target


def dep(**price):
    return Target(
        alias="a", provider="p", kind="openai", base_url="u", upstream_model="m", price=Price(**price)
    )


def test_cost_uses_catalog_prices_and_cached_rate():
    u = Usage(
        prompt_tokens=1_000_000, completion_tokens=500_000, cached_tokens=400_000, total_tokens=1_500_000
    )
    assert (
        cost_usd(u, dep(input_per_mtok=1.0, output_per_mtok=4.0, cached_input_per_mtok=0.1))
        == 0.6 + 0.04 + 2.0
    )
    # no cached price in the catalog: cached tokens cost the input price
    assert cost_usd(u, dep(input_per_mtok=1.0, output_per_mtok=4.0)) == 1.0 + 2.0


def test_units_are_priced_per_unit_and_unpriced_units_are_free():
    u = Usage(prompt_tokens=1_000_000, units={"images": 3, "audio_seconds": 10.5, "characters": 99})
    price = dep(input_per_mtok=0.02, per_unit={"images": 0.04, "audio_seconds": 0.006})
    assert cost_usd(u, price) == round(0.02 + 3 * 0.04 + 10.5 * 0.006, 10)

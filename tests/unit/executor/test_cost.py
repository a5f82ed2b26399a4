from services.contracts.events import Deployment, Price, Usage
from services.executor.handlers import cost_usd


def dep(**price):
    return Deployment(alias="a", provider="p", provider_kind="openai", base_url="u", upstream_model="m", price=Price(**price))


def test_cost_uses_catalog_prices_and_cached_rate():
    u = Usage(prompt_tokens=1_000_000, completion_tokens=500_000, cached_tokens=400_000, total_tokens=1_500_000)
    assert cost_usd(u, dep(input_per_mtok=1.0, output_per_mtok=4.0, cached_input_per_mtok=0.1)) == 0.6 + 0.04 + 2.0
    # no cached price in the catalog: cached tokens cost the input price
    assert cost_usd(u, dep(input_per_mtok=1.0, output_per_mtok=4.0)) == 1.0 + 2.0

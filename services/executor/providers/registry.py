"""Provider kind -> adapter. Adding a provider is one line here (STYLE 3).

Adapters are stateless, so one instance per kind serves every request.
"""

from __future__ import annotations

from .anthropic import AnthropicAdapter
from .base import ProviderAdapter
from .ollama import OllamaAdapter
from .openai import OpenAIAdapter

ADAPTERS: dict[str, ProviderAdapter] = {
    "openai": OpenAIAdapter(),
    "anthropic": AnthropicAdapter(),
    "ollama": OllamaAdapter(),
}


def adapter_for(kind: str) -> ProviderAdapter:
    """The adapter for a provider kind; ``LookupError`` for a kind with none (a config bug:
    the config schema only admits registered kinds)."""
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise LookupError(f"no provider adapter for kind {kind!r} (known: {', '.join(ADAPTERS)})") from None

"""(provider kind, operation) -> adapter. Adding a provider or a capability is one line here (STYLE 3).

Adapters are stateless, so one instance per (kind, operation) serves every request.
Asking for an operation a provider kind does not offer is ``capability_not_supported``,
raised before any HTTP.
"""

from __future__ import annotations

from typing import Any

from services.contracts.errors import CapabilityNotSupported

from . import gemini, openai_media
from .anthropic import AnthropicAdapter
from .anthropic_batches import AnthropicBatchesAdapter
from .ollama import OllamaAdapter
from .ollama_embeddings import OllamaEmbeddingsAdapter
from .openai import OpenAIAdapter
from .openai_batches import OpenAIBatchesAdapter
from .openai_embeddings import OpenAIEmbeddingsAdapter
from .openai_video import OpenAIVideoAdapter

ADAPTERS: dict[tuple[str, str], Any] = {
    ("openai", "chat"): OpenAIAdapter(),
    ("anthropic", "chat"): AnthropicAdapter(),
    ("ollama", "chat"): OllamaAdapter(),
    ("openai", "embed"): OpenAIEmbeddingsAdapter(),
    ("ollama", "embed"): OllamaEmbeddingsAdapter(),
    **gemini.ADAPTERS,
    **openai_media.ADAPTERS,
    ("openai", "video.generate"): OpenAIVideoAdapter(),
    ("openai", "batch.run"): OpenAIBatchesAdapter(),
    ("anthropic", "batch.run"): AnthropicBatchesAdapter(),
}

KINDS: frozenset[str] = frozenset(kind for kind, _ in ADAPTERS)


def adapter_for(kind: str, operation: str = "chat") -> Any:
    """The adapter of ``kind`` for ``operation``: ``CapabilityNotSupported`` when that kind
    does not offer it (``LookupError`` for a kind with no adapter at all, a config bug)."""
    try:
        return ADAPTERS[(kind, operation)]
    except KeyError:
        if kind not in KINDS:
            raise LookupError(
                f"no provider adapter for kind {kind!r} (known: {', '.join(sorted(KINDS))})"
            ) from None
        offered = sorted(op for k, op in ADAPTERS if k == kind)
        raise CapabilityNotSupported(
            f"provider kind {kind!r} does not offer operation {operation!r} (it offers: {', '.join(offered)})"
        ) from None


def supports(kind: str, operation: str) -> bool:
    return (kind, operation) in ADAPTERS


def adapters(operation: str) -> dict[str, Any]:
    """kind -> adapter, for every kind that offers ``operation`` (conformance suites run over these)."""
    return {kind: a for (kind, op), a in ADAPTERS.items() if op == operation}

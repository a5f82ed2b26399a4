"""OpenAI's media APIs: images, speech, transcriptions."""

from __future__ import annotations

from typing import Any

#: (kind, operation) -> adapter, merged into the registry.
ADAPTERS: dict[tuple[str, str], Any] = {}

"""Provider emulator: fake OpenAI / Anthropic / Ollama servers with faithful wire formats.

One app serves every format on its real path (``/v1/chat/completions``,
``/v1/embeddings``, ``/v1/messages``, ``/api/chat``, ``/api/embed``, ...), so one
base URL works for every SDK. Behaviour per request comes from a scenario in the
model name (``gpt-emu@tokens=20,chunk_delay_ms=10``) or the
``x-emulator-scenario`` header; see :mod:`.scenario`. Output and token counts
are deterministic; see :mod:`.text`. Tool calls (parallel too) and structured (JSON)
answers follow the request's tools / schema (:mod:`.tools`, :mod:`.schemas`).
``GET /_emulator/calls`` lists the embeddings calls received (:mod:`.app`).

Run: ``python -m services.emulator --host 127.0.0.1 --port 8100``.
"""

from .app import create_app
from .text import count_prompt_tokens

__all__ = ["count_prompt_tokens", "create_app"]

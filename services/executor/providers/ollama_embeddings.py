"""Ollama's embeddings API (``POST {base_url}/api/embed``, ``input`` a list of texts).

Ollama answers floats only: a caller asking for ``base64`` gets the little-endian float32
bytes of those floats, base64-encoded (OpenAI's encoding). ``dimensions`` is sent (Ollama
0.11+ shortens the vectors itself); an Ollama that ignores it answers longer vectors, which
are cut to ``dimensions`` and scaled back to unit length (``_embeddings.fitted``), so the
caller always gets the length it asked for. Usage is ``prompt_eval_count`` (Ollama reports
no other count). ``extra`` keys reach the provider unchanged (``truncate``, ``keep_alive``,
``options`` ...); the typed fields win over them.
"""

from __future__ import annotations

from typing import Any

from services.contracts.events import EmbedRequested

from ..targets import Target
from ._embeddings import Embeddings, embed_usage, encoded, fitted, vectors_of
from ._http import PostsEmbeddings, bearer, headers


class OllamaEmbeddingsAdapter(PostsEmbeddings):
    kind = "ollama"

    def to_wire(self, req: EmbedRequested, deployment: Target) -> dict[str, Any]:
        body: dict[str, Any] = dict(req.extra)
        body["model"] = deployment.upstream_model
        body["input"] = list(req.input)
        if req.dimensions is not None:
            body["dimensions"] = req.dimensions
        else:
            body.pop("dimensions", None)
        body.pop("encoding_format", None)  # not an Ollama field: converted here
        return body

    def from_wire(self, body: dict[str, Any], req: EmbedRequested) -> Embeddings:
        vectors = vectors_of(body["embeddings"], len(req.input), "ollama embed")
        prompt = body.get("prompt_eval_count") or 0
        return Embeddings(
            vectors=[
                encoded(fitted(v, req.dimensions) if isinstance(v, list) else v, req.encoding_format)
                for v in vectors
            ],
            usage=embed_usage(prompt, prompt, len(req.input)),
            model=body.get("model") or "",
        )

    def endpoint(self, deployment: Target, api_key: str | None) -> tuple[str, dict[str, str]]:
        return f"{deployment.base_url.rstrip('/')}/api/embed", headers(bearer(api_key))

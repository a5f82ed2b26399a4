"""OpenAI-compatible embeddings (``POST {base_url}/embeddings``, base_url ends in /v1).

The provider is asked for exactly what the caller asked: ``input`` as a list, ``dimensions``
when set, and the caller's ``encoding_format``, so a base64 answer reaches the caller byte
for byte. A compatible server that answers floats to a base64 request (or base64 to a float
one) is converted (``_embeddings.encoded``). ``extra`` keys reach the provider unchanged;
the typed fields win over them.
"""

from __future__ import annotations

from typing import Any

from services.contracts.events import EmbedRequested

from ..targets import Target
from ._embeddings import Embeddings, embed_usage, encoded, vectors_of
from ._http import PostsEmbeddings, bearer, headers


class OpenAIEmbeddingsAdapter(PostsEmbeddings):
    """OpenAI embeddings and every server that speaks them."""

    kind = "openai"

    def to_wire(self, req: EmbedRequested, deployment: Target) -> dict[str, Any]:
        body: dict[str, Any] = dict(req.extra)
        body["model"] = deployment.upstream_model
        body["input"] = list(req.input)
        body["encoding_format"] = req.encoding_format
        if req.dimensions is not None:
            body["dimensions"] = req.dimensions
        else:
            body.pop("dimensions", None)
        return body

    def from_wire(self, body: dict[str, Any], req: EmbedRequested) -> Embeddings:
        """``data`` in ``index`` order, one item per input; usage ``prompt_tokens``/``total_tokens``."""
        data = sorted(vectors_of(body["data"], len(req.input), "embeddings"), key=lambda d: d["index"])
        if [d["index"] for d in data] != list(range(len(data))):
            raise ValueError("embeddings: indexes are not 0..n-1")
        u = body.get("usage") or {}
        prompt = u.get("prompt_tokens") or 0
        return Embeddings(
            vectors=[encoded(d["embedding"], req.encoding_format) for d in data],
            usage=embed_usage(prompt, u.get("total_tokens"), len(req.input)),
            model=body.get("model") or "",
        )

    def endpoint(self, deployment: Target, api_key: str | None) -> tuple[str, dict[str, str]]:
        return f"{deployment.base_url.rstrip('/')}/embeddings", headers(bearer(api_key))

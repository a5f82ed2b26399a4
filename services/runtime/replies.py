"""Where a request's chunks and result go (DESIGN §2)."""

from __future__ import annotations

from services.contracts.events import ChatRequested

from .topics import Topics


def result_target(req: ChatRequested, topics: Topics) -> tuple[str, int | None]:
    """The caller's reply partition when it named one, else ``llm.results`` keyed by request id."""
    if req.reply_to is not None:
        return req.reply_to.topic, req.reply_to.partition
    return topics.results.name, None


def chunk_target(req: ChatRequested, topics: Topics) -> tuple[str, int | None]:
    if req.reply_to is not None:
        return req.reply_to.topic, req.reply_to.partition
    return topics.chunks.name, None

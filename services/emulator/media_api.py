"""OpenAI's media APIs (images, speech, transcriptions), emulated."""

from __future__ import annotations

from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    return []

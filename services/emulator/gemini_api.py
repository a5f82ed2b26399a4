"""Google Gemini API (``generateContent``, ``streamGenerateContent``, Files API), emulated."""

from __future__ import annotations

from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    return []

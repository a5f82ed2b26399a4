"""HTTP edge: the OpenAI-compatible API and the native ``/v1/chat`` over the event pipeline.

Every HTTP request becomes a request event; answers come from result and chunk events
(the edge is a client of the pipeline, like any producing service).
"""

from .app import create_app

__all__ = ["create_app"]

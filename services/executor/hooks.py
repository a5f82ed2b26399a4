"""The executor's post-response step: a tenant's hooks on an answer before it is published.

* A whole answer (``check_answer``): a block becomes the outcome's error (``response_blocked``
  naming the rule): the provider was called, so the usage is billed, but the caller gets the
  error, never the text; it is final like any refused answer (no retry, no other provider).
  A modification replaces the answer's text (and tool calls).
* A stream (``response_guard``, the ``ChunkEmitter``'s guard): the hooks see the text as it
  accumulates, before each chunk goes out; a block ends the stream with ``response_blocked``.
"""

from __future__ import annotations

from services.contracts.events import ChatRequested
from services.runtime.hooks import Block, HookChain, HookResponse, block_error

from .chunker import Guard
from .handlers import Outcome


async def check_answer(chain: HookChain, req: ChatRequested, outcome: Outcome) -> None:
    """Run ``chain``'s post-response hooks on a whole answer, updating ``outcome`` in place."""
    msg = outcome.message
    if msg is None:  # not a chat answer: nothing for these hooks
        return
    text, calls = msg.content or "", tuple(msg.tool_calls or ())
    verdict = await chain.post_response(HookResponse(req, text, calls))
    if isinstance(verdict, Block):
        outcome.error = block_error(verdict, "response")
    elif verdict.text != text or verdict.tool_calls != calls:
        content = verdict.text if verdict.text or msg.content is not None else None
        outcome.message = msg.model_copy(
            update={"content": content, "tool_calls": list(verdict.tool_calls) or None}
        )


def response_guard(chain: HookChain, req: ChatRequested) -> Guard:
    async def guard(sent: str, pending: str, final: bool) -> str:
        verdict = await chain.post_response(HookResponse(req, sent + pending, (), final, len(sent)))
        if isinstance(verdict, Block):
            raise block_error(verdict, "response")
        return verdict.text[len(sent) :]

    return guard

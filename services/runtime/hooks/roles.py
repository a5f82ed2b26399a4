"""The Hook role and its verdicts (S2.4 / UC-017 before the call, S2.5 / UC-018 after it).

A hook answers each request (``pre_call``, run by the router before the request is planned) and
each answer (``post_response``, run by the executor before the answer is published) with one of:

* ``ALLOW``: go on unchanged;
* ``Block(rule, reason)``: refuse. Before the call the caller gets ``request_blocked``, after it
  ``response_blocked``; both name ``rule`` (in the message and in ``error.details.rule``). A block
  is final: no retry, no other provider. ``error`` may give the exact error to answer with
  instead (the built-in policies keep their historical codes that way);
* ``Modify(value)``: go on with ``value``, a changed request (``pre_call``) or response
  (``post_response``); the next hook sees the changed one.

``Hook`` is a Protocol whose methods are no-ops: a class that subclasses it and overrides only
``pre_call`` takes part only before the call, and the other stage costs nothing. A hook's methods
run on the service's event loop: one that does I/O must be async all the way (and fast: the
request waits for it). A hook that raises fails the request (``internal_error`` naming it):
governance fails closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar, Union, cast

from services.contracts.errors import GatewayError
from services.contracts.events import (
    ChatRequested,
    EmbedRequested,
    ImageGenerateRequested,
    SpeechRequested,
    ToolCall,
    TranscribeRequested,
    VideoGenerateRequested,
)

#: The requests hooks see: the ones a provider executes.
HookRequest = (
    ChatRequested
    | EmbedRequested
    | ImageGenerateRequested
    | SpeechRequested
    | TranscribeRequested
    | VideoGenerateRequested
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Allow:
    """Go on unchanged."""


ALLOW = Allow()


@dataclass(frozen=True, slots=True)
class Block:
    """Refuse, naming the ``rule`` (a short identifier: it reaches the caller and the audit log)
    and a ``reason`` for the caller (never the offending text itself: it would reach the audit
    log). ``error``: the error to answer with, when not ``request_blocked`` / ``response_blocked``."""

    rule: str
    reason: str
    error: GatewayError | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Modify(Generic[T]):
    """Go on with ``value`` instead (a request before the call, a ``HookResponse`` after it)."""

    value: T


Verdict = Union[Allow, Block, Modify[T]]  # noqa: UP007 (a generic alias needs Union here)


@dataclass(frozen=True, slots=True)
class HookResponse:
    """An answer as ``post_response`` sees it.

    ``text`` is the answer's text: the whole of it for an answer given whole, and for a stream the
    text so far (``final`` False until the last call). ``sent`` is how much of ``text`` the caller
    already has: a streamed answer is checked before each chunk goes out, so ``text[sent:]`` is
    what would go out next. A ``Modify`` may change only that part (``text[:sent]`` must stay as it
    is; otherwise the stream is blocked, since what was sent cannot be taken back).
    ``tool_calls``: the answer's tool calls (whole answers only; a stream's are not checked).
    """

    request: ChatRequested
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    final: bool = True
    sent: int = 0

    @property
    def pending(self) -> str:
        """The part of ``text`` the caller has not seen yet."""
        return self.text[self.sent :]


class Hook(Protocol):
    """Subclass it and override what you need; each method's default allows everything."""

    async def pre_call(self, request: HookRequest) -> Verdict[HookRequest]:
        """Before planning (router). A ``Modify``'s request may change the request's content
        (chat: ``messages``, ``params``; embeddings: ``input``, ``extra``); its identity and
        routing (ids, tenant, user, reply address, model, fallbacks) are kept from the original."""
        return ALLOW

    async def post_response(self, response: HookResponse) -> Verdict[HookResponse]:
        """Before the answer (or, streamed, its next chunk) is published (executor)."""
        return ALLOW


def overrides(hook: object, method: str) -> bool:
    """Whether ``hook`` does something in ``method`` (defines it, and not as ``Hook``'s no-op)."""
    impl = getattr(type(hook), method, None)
    return impl is not None and impl is not getattr(Hook, method)


H = TypeVar("H", bound=type)


def with_stages(cls: H, *, pre: bool, post: bool) -> H:
    """``cls`` with the stages that are off replaced by ``Hook``'s no-ops (so ``overrides`` leaves
    the hook out of them): a hook class whose options turn a stage off builds one of these."""
    if pre and post:
        return cls
    staged = _staged.get((cls, pre, post))
    if staged is None:
        ns: dict[str, object] = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        if not pre:
            ns["pre_call"] = Hook.pre_call
        if not post:
            ns["post_response"] = Hook.post_response
        staged = _staged[(cls, pre, post)] = type(cls.__name__, (cls,), ns)
    return cast(H, staged)  # a subclass of cls, made here


_staged: dict[tuple[type, bool, bool], type] = {}

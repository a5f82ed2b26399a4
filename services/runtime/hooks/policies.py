"""The prototype's policies as hooks: ``disabled_models``, ``require_client_id``, ``max_prompt_size``.

The configuration's ``policies`` section applies them to every tenant (``policy_hooks``); a
tenant may add stricter ones in its own ``hooks`` (``{name: max_prompt_size, max_bytes: 65536}``).
Their blocks carry the errors they always gave, so callers see the same codes and messages:

* ``disabled_models`` (option ``models``): ``model_not_approved`` "model 'x' is disabled by
  policy" for the requested model or any of its fallbacks;
* ``require_client_id``: ``validation_error`` "client_id is required by policy" (every operation);
* ``max_prompt_size`` (option ``max_bytes``): ``validation_error`` "messages is N bytes, over the
  L-byte prompt limit" (``input`` for embeddings), N being the size of the messages as JSON.

Each also has ``check(request, raw_size)``, the same verdict without a coroutine, which the router
runs for the configuration's policies; ``raw_size`` (the bytes of the request event) lets the size
check skip the serialisation when the whole event is under the limit.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from services.contracts.errors import ModelNotApproved, ValidationError
from services.contracts.events import ChatRequested, EmbedRequested, ModelRequest, RequestBase

from .roles import ALLOW, Allow, Block, Hook, HookRequest, Verdict


class DisabledModelsHook(Hook):
    rule = "disabled_models"

    def __init__(self, models: Iterable[str]):
        self.models = frozenset(models)

    def check(self, request: RequestBase, raw_size: int | None = None) -> Allow | Block:
        if isinstance(request, ModelRequest):
            for alias in (request.model, *request.fallbacks):
                if alias in self.models:
                    msg = f"model {alias!r} is disabled by policy"
                    return Block(self.rule, msg, ModelNotApproved(msg, param="model"))
        return ALLOW

    async def pre_call(self, request: HookRequest) -> Verdict[HookRequest]:
        return self.check(request)


class RequiredClientIdHook(Hook):
    rule = "require_client_id"

    def check(self, request: RequestBase, raw_size: int | None = None) -> Allow | Block:
        if request.client_id:
            return ALLOW
        msg = "client_id is required by policy"
        return Block(self.rule, msg, ValidationError(msg, param="client_id"))

    async def pre_call(self, request: HookRequest) -> Verdict[HookRequest]:
        return self.check(request)


class PromptSizeHook(Hook):
    rule = "max_prompt_size"

    def __init__(self, max_bytes: int):
        if not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        self.max_bytes = max_bytes

    def check(self, request: RequestBase, raw_size: int | None = None) -> Allow | Block:
        if raw_size is not None and raw_size <= self.max_bytes:
            return ALLOW  # the whole event is smaller than the limit, so its prompt is too
        if isinstance(request, ChatRequested):
            what, size = (
                "messages",
                len(orjson.dumps([m.model_dump(exclude_none=True) for m in request.messages])),
            )
        elif isinstance(request, EmbedRequested):
            what, size = "input", sum(len(t.encode()) for t in request.input)
        else:
            return ALLOW
        if size <= self.max_bytes:
            return ALLOW
        msg = f"{what} is {size} bytes, over the {self.max_bytes}-byte prompt limit"
        return Block(self.rule, msg, ValidationError(msg, param=what))

    async def pre_call(self, request: HookRequest) -> Verdict[HookRequest]:
        return self.check(request)


PolicyHook = DisabledModelsHook | RequiredClientIdHook | PromptSizeHook


def disabled_models(*, models: list[str]) -> Hook:
    return DisabledModelsHook(models)


def require_client_id() -> Hook:
    return RequiredClientIdHook()


def max_prompt_size(*, max_bytes: int) -> Hook:
    return PromptSizeHook(max_bytes)

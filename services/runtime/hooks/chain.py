"""A tenant's hooks in order (``HookChain``), and every tenant's, built once at start (``TenantHooks``).

Order and outcome: hooks run in the order the tenant's ``hooks`` list names them. The first
``Block`` ends the run (later hooks are not asked); a ``Modify`` hands its value to the next hook;
the chain's answer is the last value, or the block. A hook that raises, or answers something that
is not a verdict, fails the request with ``internal_error`` naming it (fail closed).

A modified request keeps the original's identity and routing: only its content is taken (chat:
``messages``, ``params``; embeddings: ``input``, ``extra``). A modified answer of a stream must keep
what was already sent (see ``HookResponse``); one that does not blocks the stream.

Cost: a tenant without hooks has no chain (``pre``/``post`` answer None) and the services do no
work for it; a chain holds, per stage, only the hooks that override that stage's method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from services.contracts.errors import GatewayError, InternalError, RequestBlocked, ResponseBlocked

from .. import entrypoints
from .roles import Allow, Block, Hook, HookRequest, HookResponse, Modify, overrides

if TYPE_CHECKING:
    from ..config import GatewayConfig, HookSpec

#: Request fields a pre-call ``Modify`` may change.
CHAT_CONTENT = ("messages", "params")
EMBED_CONTENT = ("input", "extra")
#: What a hook may change, per operation (the rest of a request is the gateway's).
CONTENT: dict[str, tuple[str, ...]] = {
    "chat": CHAT_CONTENT,
    "embed": EMBED_CONTENT,
    "image.generate": ("prompt", "extra"),
    "audio.speech": ("input", "instructions", "extra"),
    "audio.transcribe": ("prompt", "extra"),
    "video.generate": ("prompt", "extra"),
}


def builtin_hooks() -> Mapping[str, entrypoints.Factory]:
    """Name -> factory of the built-in hooks (options are the factory's keyword arguments)."""
    from . import blocklist, pii, policies

    return {
        "pii_redaction": pii.pii_redaction,
        "blocklist": blocklist.blocklist,
        "disabled_models": policies.disabled_models,
        "require_client_id": policies.require_client_id,
        "max_prompt_size": policies.max_prompt_size,
    }


def hook_names() -> set[str]:
    """Every hook name a configuration may use: the built-ins and the ``llmgw.hooks`` entry points."""
    return entrypoints.names(entrypoints.HOOKS, builtin_hooks())


def build_hook(spec: HookSpec) -> Hook:
    """The hook a configuration entry names, built with its options (``PluginError`` if not)."""
    return entrypoints.create(entrypoints.HOOKS, spec.name, Hook, builtin_hooks(), **spec.options())


def block_error(block: Block, stage: str) -> GatewayError:
    """The error a block answers with: its own, else ``request_blocked`` (``stage`` "request") or
    ``response_blocked`` naming the rule; either way ``details.rule`` names it."""
    err = block.error
    if err is None:
        cls = RequestBlocked if stage == "request" else ResponseBlocked
        return cls(f"{stage} blocked by rule {block.rule!r}: {block.reason}", details={"rule": block.rule})
    return type(err)(err.message, param=err.param, details={**err.details, "rule": block.rule})


class HookChain:
    def __init__(self, hooks: Sequence[tuple[str, Hook]]):
        self.pre = tuple((n, h) for n, h in hooks if overrides(h, "pre_call"))
        self.post = tuple((n, h) for n, h in hooks if overrides(h, "post_response"))

    async def pre_call(self, request: HookRequest) -> HookRequest | Block:
        for name, hook in self.pre:
            try:
                verdict = await hook.pre_call(request)
            except Exception as exc:
                raise _failed(name, "pre_call", exc) from exc
            if isinstance(verdict, Block):
                return _named(verdict, name)
            if isinstance(verdict, Modify):
                request = _content_of(verdict.value, request, name)
            elif not isinstance(verdict, Allow):
                raise _failed(name, "pre_call", TypeError(f"answered {verdict!r}, not a verdict"))
        return request

    async def post_response(self, response: HookResponse) -> HookResponse | Block:
        for name, hook in self.post:
            try:
                verdict = await hook.post_response(response)
            except Exception as exc:
                raise _failed(name, "post_response", exc) from exc
            if isinstance(verdict, Block):
                return _named(verdict, name)
            if isinstance(verdict, Modify):
                new = verdict.value
                if not isinstance(new, HookResponse):
                    raise _failed(name, "post_response", TypeError(f"modified into {type(new).__name__}"))
                if response.sent and new.text[: response.sent] != response.text[: response.sent]:
                    return Block(name, "the answer would change in text already sent")
                response = HookResponse(
                    response.request, new.text, new.tool_calls, response.final, response.sent
                )
            elif not isinstance(verdict, Allow):
                raise _failed(name, "post_response", TypeError(f"answered {verdict!r}, not a verdict"))
        return response


def _named(block: Block, name: str) -> Block:
    return block if block.rule else Block(name, block.reason, block.error)


def _failed(name: str, stage: str, exc: Exception) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    return InternalError(f"hook {name!r} failed in {stage}: {type(exc).__name__}: {exc}")


def _content_of(new: Any, original: HookRequest, name: str) -> HookRequest:
    if type(new) is not type(original):
        raise _failed(
            name, "pre_call", TypeError(f"modified a {type(original).__name__} into {type(new).__name__}")
        )
    fields = CONTENT[original.operation]
    return original.model_copy(update={f: getattr(new, f) for f in fields})


class TenantHooks:
    """tenant -> its ``HookChain``. Every hook is built at start, so a name that does not resolve or
    options a hook refuses stop the service with a ``ConfigError`` naming the tenant and entry."""

    def __init__(self, chains: Mapping[str, HookChain]):
        self._pre = {t: c for t, c in chains.items() if c.pre}
        self._post = {t: c for t, c in chains.items() if c.post}

    @classmethod
    def from_config(cls, config: GatewayConfig) -> TenantHooks:
        from ..config import ConfigError

        chains = {}
        for tenant, tc in config.tenants.items():
            hooks = []
            for i, spec in enumerate(tc.hooks):
                try:
                    hooks.append((spec.name, build_hook(spec)))
                except entrypoints.PluginError as exc:
                    raise ConfigError(f"tenants.{tenant}.hooks.{i}: {exc}") from exc
            if hooks:
                chains[tenant] = HookChain(hooks)
        return cls(chains)

    def pre(self, tenant: str) -> HookChain | None:
        """The tenant's chain if any of its hooks runs before the call, else None."""
        return self._pre.get(tenant)

    def post(self, tenant: str) -> HookChain | None:
        """The tenant's chain if any of its hooks runs on answers, else None."""
        return self._post.get(tenant)

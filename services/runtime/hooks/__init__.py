"""The Hook role (issue 11): what a tenant's requests and answers pass through.

``from services.runtime.hooks import Hook, ALLOW, Block, Modify, HookResponse`` is all a hook of
another package needs (see ``roles.py`` for the contract, ``chain.py`` for how a tenant's hooks
run, ``services/runtime/entrypoints.py`` for how a package declares one). Built in: ``pii.py``
(``pii_redaction``), ``blocklist.py`` (``blocklist``), ``policies.py`` (``disabled_models``,
``require_client_id``, ``max_prompt_size``).
"""

from .chain import HookChain, TenantHooks, block_error, build_hook, builtin_hooks, hook_names
from .roles import (
    ALLOW,
    Allow,
    Block,
    Hook,
    HookRequest,
    HookResponse,
    Modify,
    Verdict,
    overrides,
    with_stages,
)

__all__ = [
    "ALLOW",
    "Allow",
    "Block",
    "Hook",
    "HookChain",
    "HookRequest",
    "HookResponse",
    "Modify",
    "TenantHooks",
    "Verdict",
    "block_error",
    "build_hook",
    "builtin_hooks",
    "hook_names",
    "overrides",
    "with_stages",
]

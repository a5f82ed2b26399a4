"""API keys: ``Authorization: Bearer <key>`` (or, on Anthropic's routes, ``x-api-key: <key>``)
-> the tenant and user the key belongs to.

The configuration holds only SHA-256 hashes of keys; the tenant comes from the key and
nothing else (a tenant named in a request body is ignored), so a key never acts for
another tenant.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from services.contracts.errors import AuthenticationError
from services.runtime.config import GatewayConfig


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a key belongs to; ``key``: the key's configured ``name`` (never the key or its hash),
    carried on the request event as ``api_key`` for per-key limits and budgets."""

    tenant_id: str
    user_id: str
    key: str | None = None


def bearer_token(authorization: bytes | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    token = token.strip()
    return token or None


class KeyIndex:
    """sha256(key) -> ``Caller``, built once from the configuration."""

    def __init__(self, config: GatewayConfig):
        self._callers = {
            k.sha256: Caller(tenant, k.user, k.name)
            for tenant, tc in config.tenants.items()
            for k in tc.api_keys
        }

    def authenticate(self, authorization: bytes | None) -> Caller:
        """The caller for this header, or ``AuthenticationError`` (401)."""
        token = bearer_token(authorization)
        if token is None:
            raise AuthenticationError(
                "missing API key: send it as 'Authorization: Bearer <key>'"
                if not authorization
                else "malformed Authorization header: expected 'Bearer <key>'"
            )
        return self._caller(token)

    def authenticate_api_key(self, api_key: bytes | None, authorization: bytes | None) -> Caller:
        """The caller for an ``x-api-key: <key>`` header (Anthropic's), else for the
        ``Authorization`` header as ``authenticate`` reads it; ``x-api-key`` wins when both are sent."""
        if api_key is None:
            if not authorization:
                raise AuthenticationError(
                    "missing API key: send it as 'x-api-key: <key>' or 'Authorization: Bearer <key>'"
                )
            return self.authenticate(authorization)
        return self._caller(api_key.strip())

    def _caller(self, token: bytes) -> Caller:
        # sha256 of the header's bytes == hash_key(key) (which hashes the key's UTF-8 bytes)
        caller = self._callers.get(hashlib.sha256(token).hexdigest())
        if caller is None:
            raise AuthenticationError("invalid API key")
        return caller

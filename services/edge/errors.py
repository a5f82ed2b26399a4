"""Gateway errors as HTTP answers: one status per code, two body shapes.

* OpenAI routes answer ``{"error": {"message", "type", "param", "code"}}`` with the
  class's ``http_status``, ``openai_type`` as ``type`` and the gateway code as ``code``,
  which is what OpenAI SDKs turn into their exception classes; an error with details
  (a structured-output violation's ``violations`` and ``raw``) adds ``details``, which the
  OpenAI SDK exposes as ``err.body["details"]``.
* The native ``/v1/chat`` answers ``{"error": {"type", "message"}}``: ``type`` is the
  gateway code, except ``rate_limited`` which is ``rate_limit_exceeded`` and names the
  client id (the prototype spec's wording).

The README's error table is :func:`error_table` (a test compares the two).
"""

from __future__ import annotations

from typing import Any

import orjson

from services.contracts.errors import ERRORS, GatewayError

#: Native error ``type`` where it is not the gateway code itself.
NATIVE_TYPES = {"rate_limited": "rate_limit_exceeded"}

JSON = (b"content-type", b"application/json")


class HTTPError(Exception):
    """A request the edge cannot route (unknown path, wrong method): no gateway code."""

    def __init__(self, status: int, message: str, *, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


#: Error details that are transport bookkeeping, not for callers.
PRIVATE_DETAILS = frozenset({"upstream_status"})


def openai_body(err: GatewayError) -> dict[str, Any]:
    body: dict[str, Any] = {"message": err.message, "type": err.openai_type, "param": err.param, "code": err.code}
    if err.details and (details := {k: v for k, v in err.details.items() if k not in PRIVATE_DETAILS}):
        body["details"] = details
    return {"error": body}


def openai_error(err: GatewayError | HTTPError) -> tuple[int, bytes]:
    """(HTTP status, OpenAI error body) for an error."""
    if isinstance(err, HTTPError):
        body = {"error": {"message": err.message, "type": "invalid_request_error", "param": None, "code": None}}
        return err.status, orjson.dumps(body)
    return err.http_status, orjson.dumps(openai_body(err))


def native_type(err: GatewayError) -> str:
    return NATIVE_TYPES.get(err.code, err.code)


def native_message(err: GatewayError, client_id: str | None) -> str:
    if err.code == "rate_limited":
        return f"rate limit exceeded for client_id {client_id or '(none)'}: {err.message}"
    return err.message


def native_error(err: GatewayError | HTTPError, client_id: str | None = None) -> tuple[int, bytes]:
    """(HTTP status, native error body) for an error on ``/v1/chat``."""
    if isinstance(err, HTTPError):
        return err.status, orjson.dumps({"error": {"type": "invalid_request", "message": err.message}})
    body = {"error": {"type": native_type(err), "message": native_message(err, client_id)}}
    return err.http_status, orjson.dumps(body)


def error_table() -> str:
    """The README's markdown table: one row per gateway error code."""
    rows = [
        "| code | HTTP | OpenAI `type` | native `type` | retryable |",
        "|---|---|---|---|---|",
    ]
    for code in sorted(ERRORS):
        cls = ERRORS[code]
        native = NATIVE_TYPES.get(code, code)
        rows.append(
            f"| `{code}` | {cls.http_status} | `{cls.openai_type}` | `{native}` | {'yes' if cls.retryable else 'no'} |"
        )
    return "\n".join(rows)

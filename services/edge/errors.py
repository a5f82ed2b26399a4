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

Rate-limit headers (README "Rate limits and budgets"): ``ratelimit_headers`` turns the numbers
the router admitted a request with (``RateLimitInfo``: on the result, the first chunk, or a
rejection's ``details.ratelimit``) into ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``;
``error_headers`` adds ``Retry-After`` and ``retry-after-ms`` to a ``rate_limited`` answer.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from services.contracts.errors import ERRORS, GatewayError
from services.contracts.events import RateLimitInfo

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


#: Error details that are transport bookkeeping, not for callers (``ratelimit`` goes out as headers).
PRIVATE_DETAILS = frozenset({"upstream_status", "ratelimit"})

Headers = list[tuple[bytes, bytes]]


def _duration(seconds: float) -> bytes:
    return b"%.3fs" % seconds if seconds % 1 else b"%ds" % seconds


def ratelimit_headers(info: RateLimitInfo | dict[str, Any] | None) -> Headers:
    """``x-ratelimit-*`` for the binding scope of each limited dimension (none without limits)."""
    if info is None:
        return []
    if isinstance(info, dict):
        info = RateLimitInfo.model_validate(info)
    out: Headers = []
    for dim in ("requests", "tokens"):
        limit = getattr(info, f"limit_{dim}")
        if limit is None:
            continue
        out += [
            (b"x-ratelimit-limit-" + dim.encode(), str(limit).encode()),
            (b"x-ratelimit-remaining-" + dim.encode(), str(getattr(info, f"remaining_{dim}") or 0).encode()),
            (b"x-ratelimit-reset-" + dim.encode(), _duration(getattr(info, f"reset_{dim}_s") or 0.0)),
        ]
    return out


def error_headers(err: GatewayError) -> Headers:
    """Headers of an error answer: the rate-limit numbers it carries and, for ``rate_limited``,
    ``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms``."""
    out = ratelimit_headers(err.details.get("ratelimit")) if err.details else []
    retry = err.details.get("retry_after_s") if err.details else None
    if err.code == "rate_limited" and isinstance(retry, int | float):
        out += [
            (b"retry-after", str(max(math.ceil(retry), 1)).encode()),
            (b"retry-after-ms", str(max(math.ceil(retry * 1000), 1)).encode()),
        ]
    return out


def openai_body(err: GatewayError) -> dict[str, Any]:
    body: dict[str, Any] = {
        "message": err.message,
        "type": err.openai_type,
        "param": err.param,
        "code": err.code,
    }
    if err.details and (details := {k: v for k, v in err.details.items() if k not in PRIVATE_DETAILS}):
        body["details"] = details
    return {"error": body}


def openai_error(err: GatewayError | HTTPError) -> tuple[int, bytes]:
    """(HTTP status, OpenAI error body) for an error."""
    if isinstance(err, HTTPError):
        body = {
            "error": {"message": err.message, "type": "invalid_request_error", "param": None, "code": None}
        }
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

"""Gateway errors in Anthropic's shape: ``{"type": "error", "error": {"type", "message"},
"request_id"}``, with the HTTP status Anthropic sends each error type with.

| gateway code | HTTP | Anthropic ``error.type`` |
|---|---|---|
| ``validation_error``, ``capability_not_supported``, ``request_blocked`` | 400 | ``invalid_request_error`` |
| ``authentication_error`` | 401 | ``authentication_error`` |
| ``budget_exceeded`` | 402 | ``billing_error`` |
| ``model_not_approved`` | 403 | ``permission_error`` |
| ``model_not_found``, ``media_not_found``, ``job_not_found``, ``job_expired``, ``batch_not_found``, ``batch_expired`` | 404 | ``not_found_error`` |
| ``payload_too_large`` | 413 | ``request_too_large`` |
| ``rate_limited`` (the gateway's own limits) | 429 | ``rate_limit_error`` |
| ``provider_error``: no answer, or the provider's 429 / 502 / 503 / 504 / 529 | 529 | ``overloaded_error`` |
| ``provider_error``: the provider's 400 / 422 (413) | 400 (413) | ``invalid_request_error`` (``request_too_large``) |
| ``provider_timeout``, ``gateway_timeout``, ``provider_error`` with the provider's 408 | 504 | ``timeout_error`` |
| everything else (``internal_error``, ``stream_interrupted``, ``response_blocked``, other ``provider_error``) | 500 | ``api_error`` |

Every error answer has ``x-should-retry: true|false`` (the error's ``retryable``; Anthropic's SDKs
obey it over their own status rules) and ``request-id``, besides the gateway's rate-limit headers
and ``Retry-After``.
"""

from __future__ import annotations

from typing import Any

import orjson

from services.contracts.errors import GatewayError

from ..asgi import Headers, Request, Response
from ..errors import HTTPError, error_headers

INVALID = (400, "invalid_request_error")
API = (500, "api_error")
OVERLOADED = (529, "overloaded_error")
TIMEOUT = (504, "timeout_error")

_BY_CODE: dict[str, tuple[int, str]] = {
    "validation_error": INVALID,
    "capability_not_supported": INVALID,
    "request_blocked": INVALID,
    "authentication_error": (401, "authentication_error"),
    "budget_exceeded": (402, "billing_error"),
    "model_not_approved": (403, "permission_error"),
    "model_not_found": (404, "not_found_error"),
    "media_not_found": (404, "not_found_error"),
    "job_not_found": (404, "not_found_error"),
    "job_expired": (404, "not_found_error"),
    "batch_not_found": (404, "not_found_error"),
    "batch_expired": (404, "not_found_error"),
    "payload_too_large": (413, "request_too_large"),
    "rate_limited": (429, "rate_limit_error"),
    "provider_timeout": TIMEOUT,
    "gateway_timeout": TIMEOUT,
}
#: The provider's status -> the answer, for ``provider_error`` (else ``api_error``).
_BY_UPSTREAM: dict[int | None, tuple[int, str]] = {
    None: OVERLOADED,
    429: OVERLOADED,
    502: OVERLOADED,
    503: OVERLOADED,
    504: OVERLOADED,
    529: OVERLOADED,
    400: INVALID,
    422: INVALID,
    413: (413, "request_too_large"),
    408: TIMEOUT,
}
_BY_STATUS = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
}

REQUEST_ID = b"request-id"
SHOULD_RETRY = b"x-should-retry"


def status_and_type(err: GatewayError | HTTPError) -> tuple[int, str]:
    """The HTTP status and Anthropic error type of an error (see the module table)."""
    if isinstance(err, HTTPError):
        return err.status, _BY_STATUS.get(
            err.status, "invalid_request_error" if err.status < 500 else "api_error"
        )
    if err.code == "provider_error":
        return _BY_UPSTREAM.get(err.details.get("upstream_status"), API)
    return _BY_CODE.get(err.code, API)


def error_object(err: GatewayError | HTTPError, request_id: str) -> dict[str, Any]:
    """The error body (and the ``data`` of a stream's ``error`` event)."""
    _, kind = status_and_type(err)
    message = err.message
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}


def error_body(err: GatewayError | HTTPError, request_id: str) -> tuple[int, bytes]:
    status, _ = status_and_type(err)
    return status, orjson.dumps(error_object(err, request_id))


def errors(err: GatewayError | HTTPError, req: Request) -> tuple[int, bytes]:
    """The route's error format (errors the app answers: the edge's own refusals)."""
    return error_body(err, req.request_id)


def retry_header(err: GatewayError) -> tuple[bytes, bytes]:
    return SHOULD_RETRY, b"true" if err.retryable else b"false"


def answer_error_headers(err: GatewayError) -> Headers:
    """``x-should-retry`` and the gateway's rate-limit headers of an error answer (``request-id``
    is the response's own)."""
    return [retry_header(err), *error_headers(err)]


def error_response(err: GatewayError, request_id: str) -> Response:
    """An error the pipeline answered, as a whole Anthropic error response."""
    status, body = error_body(err, request_id)
    return Response(status, body, [(REQUEST_ID, request_id.encode()), *answer_error_headers(err)])

"""The gateway's one error taxonomy (DESIGN §4).

Every error has a wire ``code`` (carried in result events), an ``http_status``
(used by the edge) and ``retryable`` (whether the same request may succeed later).
``ERRORS`` maps code -> class and is built from the subclasses, so adding an
error is adding a class and its code to ``ErrorCode`` (an import-time check fails on drift).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, get_args

#: Every wire code, in the order the schemas list them (sorted).
ErrorCode = Literal[
    "authentication_error",
    "batch_expired",
    "batch_not_found",
    "budget_exceeded",
    "cancelled",
    "capability_not_supported",
    "gateway_timeout",
    "internal_error",
    "job_expired",
    "job_not_found",
    "media_not_found",
    "model_not_approved",
    "model_not_found",
    "payload_too_large",
    "provider_error",
    "provider_timeout",
    "rate_limited",
    "request_blocked",
    "response_blocked",
    "stream_interrupted",
    "validation_error",
]


class GatewayError(Exception):
    """Root of every error the gateway reports to a caller."""

    code: ClassVar[ErrorCode] = "internal_error"
    http_status: ClassVar[int] = 500
    #: The table's default; an instance may know better (see ``ProviderError``).
    retryable: bool = False
    #: OpenAI's error ``type`` for this code (what OpenAI SDKs switch on).
    openai_type: ClassVar[str] = "api_error"
    #: The request it answers, when the SDK raised it for one.
    request_id: str | None = None

    def __init__(self, message: str, *, param: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.details = details or {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    @classmethod
    def from_wire(cls, code: str, message: str, **kw: Any) -> GatewayError:
        return ERRORS.get(code, InternalError)(message, **kw)


class ModelNotFound(GatewayError):
    code = "model_not_found"
    http_status = 404
    openai_type = "invalid_request_error"


class ModelNotApproved(GatewayError):
    code = "model_not_approved"
    http_status = 403
    openai_type = "permission_error"


class ValidationError(GatewayError):
    code = "validation_error"
    http_status = 400
    openai_type = "invalid_request_error"


class CapabilityNotSupported(GatewayError):
    code = "capability_not_supported"
    http_status = 400
    openai_type = "invalid_request_error"


class BudgetExceeded(GatewayError):
    """402, not 429: retrying will not help before the period ends or the budget grows.
    ``details``: ``budget_usd``, ``remaining_usd``, ``max_cost_usd``, ``period``, ``scope``."""

    code = "budget_exceeded"
    http_status = 402
    openai_type = "insufficient_quota"


class RateLimited(GatewayError):
    """``details``: ``retry_after_s`` (when this request would fit), ``scope``, ``ratelimit``
    (the binding numbers, for the ``x-ratelimit-*`` headers)."""

    code = "rate_limited"
    http_status = 429
    retryable = True
    openai_type = "rate_limit_error"


class RequestBlocked(GatewayError):
    code = "request_blocked"
    http_status = 400
    openai_type = "invalid_request_error"


class ResponseBlocked(GatewayError):
    code = "response_blocked"
    http_status = 502
    openai_type = "api_error"


class ProviderError(GatewayError):
    """``details["upstream_status"]`` is the provider's HTTP status (None: no answer at all).
    Retryable unless the provider judged the request itself (a 4xx other than 408 or 429)."""

    code = "provider_error"
    http_status = 502
    retryable = True
    openai_type = "api_error"

    def __init__(self, message: str, *, param: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message, param=param, details=details)
        status = self.details.get("upstream_status")
        self.retryable = status is None or status >= 500 or status in (408, 429)


class ProviderTimeout(GatewayError):
    code = "provider_timeout"
    http_status = 504
    retryable = True
    openai_type = "timeout_error"


class StreamInterrupted(GatewayError):
    """SDK / edge: a stream cannot go on without losing or repeating text the caller already
    holds: chunks went missing (a gap in ``seq``), or the plan ran again after its executor failed
    and the new answer differs from the part delivered. ``details["reason"]``: ``gap`` / ``restart``."""

    code = "stream_interrupted"
    http_status = 502
    retryable = True
    openai_type = "api_error"


class JobNotFound(GatewayError):
    code = "job_not_found"
    http_status = 404
    openai_type = "invalid_request_error"


class BatchNotFound(GatewayError):
    """A batch id that is not the caller's tenant's (or does not exist: the two are not told apart)."""

    code = "batch_not_found"
    http_status = 404
    openai_type = "invalid_request_error"


class BatchExpired(GatewayError):
    """A batch item its batch's completion window stopped before it ran (the item's outcome)."""

    code = "batch_expired"
    http_status = 410
    openai_type = "invalid_request_error"


class MediaNotFound(GatewayError):
    """A file id, media id or ``s3://`` reference that is not the caller's tenant's (or does
    not exist: the two are not told apart)."""

    code = "media_not_found"
    http_status = 404
    openai_type = "invalid_request_error"


class JobExpired(GatewayError):
    code = "job_expired"
    http_status = 410
    openai_type = "invalid_request_error"


class Cancelled(GatewayError):
    code = "cancelled"
    http_status = 499
    openai_type = "cancelled"


class InternalError(GatewayError):
    code = "internal_error"
    http_status = 500
    retryable = True
    openai_type = "api_error"


class AuthenticationError(GatewayError):
    """Edge only: a missing or unknown API key (never carried in events)."""

    code = "authentication_error"
    http_status = 401
    openai_type = "authentication_error"


class PayloadTooLarge(GatewayError):
    """Edge only: the HTTP body exceeds the configured limit."""

    code = "payload_too_large"
    http_status = 413
    openai_type = "invalid_request_error"


class GatewayTimeout(GatewayError):
    """Client side: no answer arrived within the request's timeout."""

    code = "gateway_timeout"
    http_status = 504
    retryable = True
    openai_type = "timeout_error"


def _all_subclasses(cls: type[GatewayError]) -> list[type[GatewayError]]:
    out: list[type[GatewayError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


_CLASSES: list[type[GatewayError]] = [GatewayError, *_all_subclasses(GatewayError)]
ERRORS: dict[str, type[GatewayError]] = {c.code: c for c in _CLASSES}
ERROR_CODES: tuple[ErrorCode, ...] = get_args(ErrorCode)
if sorted(ERRORS) != list(ERROR_CODES):  # pragma: no cover - caught by any import in the tests
    raise RuntimeError(
        f"ErrorCode and the error classes differ in {sorted(set(ERROR_CODES) ^ set(ERRORS))}:"
        " each class's code goes into ErrorCode, sorted"
    )

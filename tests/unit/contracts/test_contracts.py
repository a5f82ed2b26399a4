import orjson
import pytest
from pydantic import ValidationError

from services.contracts.errors import ERRORS, GatewayError, ProviderError
from services.contracts.events import ChatRequested, ResultProduced
from services.contracts.schemas import check_schemas
from services.runtime.codec import decode, decode_any, encode


def test_schemas_match_models():
    assert check_schemas() == []


def test_error_codes_unique_and_complete():
    design = {
        "model_not_found",
        "model_not_approved",
        "validation_error",
        "capability_not_supported",
        "budget_exceeded",
        "rate_limited",
        "request_blocked",
        "response_blocked",
        "provider_error",
        "provider_timeout",
        "job_not_found",
        "job_expired",
        "cancelled",
        "internal_error",
    }
    assert design <= set(ERRORS)
    classes = [c for c in ERRORS.values() if c is not GatewayError]
    assert len({c.code for c in classes}) == len(classes)
    for c in classes:
        assert 400 <= c.http_status < 600


def test_from_wire_builds_the_class():
    err = GatewayError.from_wire("provider_error", "boom")
    assert isinstance(err, ProviderError) and err.code == "provider_error" and err.retryable
    assert type(GatewayError.from_wire("no_such_code", "x")).__name__ == "InternalError"


def test_unknown_fields_are_ignored():
    raw = orjson.dumps(
        {
            "request_id": "r",
            "tenant_id": "t",
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "future_field": {"a": 1},
        }
    )
    req = decode(raw, ChatRequested)
    assert req.model == "m" and not hasattr(req, "future_field")


def test_roundtrip_and_discriminated_decode():
    r = ResultProduced(
        request_id="r", tenant_id="t", status="error", error={"code": "model_not_found", "message": "m"}
    )
    back = decode_any(encode(r))
    assert isinstance(back, ResultProduced) and back.error.code == "model_not_found"


def test_unknown_error_code_is_a_schema_violation():
    with pytest.raises(ValidationError):
        ResultProduced(request_id="r", tenant_id="t", status="error", error={"code": "oops", "message": "m"})


def test_request_validation_names_field():
    with pytest.raises(ValidationError, match="messages"):
        ChatRequested(request_id="r", tenant_id="t", model="m", messages=[])


def test_provider_error_retryable_follows_the_upstream_status():
    assert GatewayError.from_wire("provider_error", "x", details={"upstream_status": 503}).retryable
    assert GatewayError.from_wire("provider_error", "x", details={"upstream_status": 429}).retryable
    assert ProviderError("lost connection", details={"upstream_status": None}).retryable
    assert not ProviderError("bad request", details={"upstream_status": 400}).retryable
    assert ProviderError.retryable  # the table's default stays

"""Every gateway error code: one HTTP status, OpenAI's error body, the OpenAI SDK's exception
class, the native body, and a row in the README's table."""

from __future__ import annotations

import re

import httpx
import openai
import orjson
import pytest

from services.contracts.errors import ERRORS, GatewayError
from services.edge.errors import error_table, native_error, openai_error

from .conftest import DEMO_KEY, ROOT
from .openai_spec import check

CODES = sorted(ERRORS)

#: What the OpenAI SDK raises for each status (openai._client._make_status_error).
SDK_CLASS = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}


def sdk_class(status: int) -> type[openai.APIStatusError]:
    return SDK_CLASS.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)


@pytest.mark.parametrize("code", CODES)
def test_openai_error_body(code):
    cls = ERRORS[code]
    status, body = openai_error(cls("what went wrong", param="model"))
    doc = orjson.loads(body)
    check("ErrorResponse", doc)
    assert status == cls.http_status
    assert doc == {
        "error": {"message": "what went wrong", "type": cls.openai_type, "param": "model", "code": code}
    }


@pytest.mark.parametrize("code", CODES)
def test_native_error_body(code):
    status, body = native_error(ERRORS[code]("nope"), client_id="svc-a")
    doc = orjson.loads(body)
    assert status == ERRORS[code].http_status and set(doc["error"]) == {"type", "message"}
    if code == "rate_limited":
        assert doc["error"]["type"] == "rate_limit_exceeded" and "svc-a" in doc["error"]["message"]
    else:
        assert doc["error"] == {"type": code, "message": "nope"}


@pytest.mark.parametrize("code", CODES)
async def test_openai_sdk_raises_the_class_for_each_code(code, app, pipeline):
    """The table as the OpenAI SDK sees it: the pipeline answers with the error, the SDK raises."""
    cls = ERRORS[code]
    pipeline.answer = lambda req: cls(f"{code} happened")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        client = openai.AsyncOpenAI(
            api_key=DEMO_KEY, base_url="http://edge/v1", http_client=http, max_retries=0
        )
        with pytest.raises(openai.APIStatusError) as exc:
            await client.chat.completions.create(
                model="demo-openai", messages=[{"role": "user", "content": "hi"}]
            )
    assert type(exc.value) is sdk_class(cls.http_status)
    assert exc.value.status_code == cls.http_status and exc.value.code == code
    assert exc.value.type == cls.openai_type and f"{code} happened" in exc.value.message


def test_rate_limited_is_openai_429():
    assert ERRORS["rate_limited"].http_status == 429
    assert sdk_class(429) is openai.RateLimitError


def test_every_code_has_one_status():
    assert all(isinstance(c.http_status, int) and 400 <= c.http_status <= 599 for c in ERRORS.values())
    assert len({c.code for c in ERRORS.values()}) == len(ERRORS)
    assert all(issubclass(c, GatewayError) for c in ERRORS.values())


def test_error_table_lists_every_code():
    table = error_table()
    for code, cls in ERRORS.items():
        assert f"| `{code}` | {cls.http_status} | `{cls.openai_type}` |" in table


def _readme_table() -> dict[str, int]:
    text = (ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else ""
    m = re.search(r"<!-- errors:start -->(.*?)<!-- errors:end -->", text, re.S)
    assert m, (
        "README.md needs the error table between <!-- errors:start --> and <!-- errors:end --> "
        "(generate it with: python -c 'from services.edge.errors import error_table; print(error_table())')"
    )
    rows = {}
    for line in m.group(1).splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[1].isdigit():
            rows[cells[0]] = int(cells[1])
    return rows


def test_readme_error_table_matches_errors():
    """Drift guard: every code in ``ERRORS`` is in the README table with its status, and nothing else is."""
    rows = _readme_table()
    missing = sorted(set(ERRORS) - set(rows))
    assert not missing, f"codes missing from the README error table: {missing}"
    extra = sorted(set(rows) - set(ERRORS))
    assert not extra, f"README error table lists unknown codes: {extra}"
    wrong = {c: (rows[c], ERRORS[c].http_status) for c in rows if rows[c] != ERRORS[c].http_status}
    assert not wrong, f"README status differs from errors.py (readme, code): {wrong}"

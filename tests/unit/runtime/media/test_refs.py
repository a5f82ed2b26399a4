"""Media references: every kind parsed, malformed ones refused, tenant ownership of keys, ids,
and redaction (no credentials, signatures or payloads in what is shown)."""

from __future__ import annotations

import base64
import re

import pytest

from services.contracts.errors import MediaNotFound, ValidationError
from services.runtime.media.refs import (
    Reference,
    decode_data_url,
    file_key,
    media_key,
    new_file_id,
    new_media_id,
    owned_key,
    parse_reference,
    redact_url,
    staging_key,
    tenant_prefix,
)

BUCKET = "llmgw-media"
FILE_ID = "file-" + "a" * 32
MEDIA_ID = "med_" + "b" * 32
PRESIGNED = (
    "https://s3.example.com/llmgw-media/tenants/demo/media/med_x?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIA%2F20260101&X-Amz-Signature=deadbeefcafe#frag"
)


def test_ids_are_fresh_and_shaped_like_the_spec():
    assert re.fullmatch(r"med_[0-9a-f]{32}", new_media_id())
    assert re.fullmatch(r"file-[0-9a-f]{32}", new_file_id())
    assert len({new_media_id() for _ in range(100)}) == 100


def test_keys_live_under_the_tenant_prefix_with_the_tenant_encoded():
    assert tenant_prefix("demo") == "tenants/demo/"
    assert tenant_prefix("a/b c") == "tenants/a%2Fb%20c/"  # a tenant id never adds a path segment
    assert media_key("demo", MEDIA_ID) == f"tenants/demo/media/{MEDIA_ID}"
    assert file_key("demo", FILE_ID) == f"tenants/demo/files/{FILE_ID}"
    assert staging_key("demo", MEDIA_ID) == f"tenants/demo/staging/{MEDIA_ID}"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("data:image/png;base64,iVBORw0KGgo=", Reference("data", "data:image/png;base64,iVBORw0KGgo=")),
        ("DATA:,hello", Reference("data", "DATA:,hello")),
        (
            "s3://llmgw-media/tenants/demo/media/med_1",
            Reference(
                "s3",
                "s3://llmgw-media/tenants/demo/media/med_1",
                bucket=BUCKET,
                key="tenants/demo/media/med_1",
            ),
        ),
        (FILE_ID, Reference("file", FILE_ID, id=FILE_ID)),
        ("file-abcXYZ09", Reference("file", "file-abcXYZ09", id="file-abcXYZ09")),
        (MEDIA_ID, Reference("media", MEDIA_ID, id=MEDIA_ID)),
        ("https://img.example/cat.png?x=1", Reference("http", "https://img.example/cat.png?x=1")),
        ("http://127.0.0.1:8080/a", Reference("http", "http://127.0.0.1:8080/a")),
    ],
)
def test_every_kind_of_reference_is_parsed(url, expected):
    assert parse_reference(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "",
        "cat.png",
        "/etc/passwd",
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "s3://",
        "s3://bucket",
        "s3://bucket/",
        "s3:bucket/key",
        "s3://UPPER_bucket/key",
        "https://",
        "https:///no-host",
        "https://example.com:99999/a",
        "file-",
        "file-../../x",
        "file-a/b",
        "med_",
        "med_x/../y",
        "data:image/png;base64",  # no comma
    ],
)
def test_malformed_references_are_refused(url):
    with pytest.raises(ValidationError):
        parse_reference(url)


def test_a_refusal_names_the_reference_redacted():
    with pytest.raises(ValidationError) as info:
        parse_reference("ftp://user:hunter2@example.com/a.png?token=secret")
    assert "ftp://example.com/a.png?<redacted>" in info.value.message
    assert "hunter2" not in info.value.message and "secret" not in info.value.message
    assert info.value.details["url"] == "ftp://example.com/a.png?<redacted>"


def test_data_urls_decode_base64_and_percent_encoding():
    body = bytes(range(256))
    assert decode_data_url(f"data:image/PNG;base64,{base64.b64encode(body).decode()}") == ("image/png", body)
    assert decode_data_url("data:text/plain;charset=utf-8,caf%C3%A9") == ("text/plain", "café".encode())
    assert decode_data_url("data:,x") == (None, b"x")
    assert decode_data_url("data:;base64,aGk=") == (None, b"hi")
    wrapped = "aGVs\nbG8="  # line-wrapped base64 is still base64
    assert decode_data_url(f"data:audio/wav;base64,{wrapped}") == ("audio/wav", b"hello")


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64,not*base64!",
        "data:image/png;base64,aGk",  # bad padding
        "data:not a type;base64,aGk=",
        "data:image/png;base64",
        "https://example.com/a.png",
    ],
)
def test_malformed_data_urls_are_refused(url):
    with pytest.raises(ValidationError):
        decode_data_url(url)


def test_owned_keys_resolve_for_their_tenant():
    key = media_key("demo", MEDIA_ID)
    assert owned_key("demo", parse_reference(f"s3://{BUCKET}/{key}"), BUCKET) == key
    assert owned_key("demo", parse_reference(FILE_ID), BUCKET) == file_key("demo", FILE_ID)
    assert owned_key("demo", parse_reference(MEDIA_ID), BUCKET) == media_key("demo", MEDIA_ID)
    # ids resolve under the caller's own prefix, whoever minted them
    assert owned_key("other", parse_reference(FILE_ID), BUCKET) == file_key("other", FILE_ID)


@pytest.mark.parametrize(
    "url",
    [
        f"s3://{BUCKET}/tenants/other/media/med_1",  # another tenant's object
        f"s3://{BUCKET}/tenants/demo-evil/media/med_1",  # a tenant whose id starts with ours
        f"s3://{BUCKET}/tenants/demo",  # the prefix, not under it
        f"s3://{BUCKET}/tenants/demo/",
        f"s3://{BUCKET}/tenants/demo/../other/media/med_1",  # escaping with ..
        f"s3://{BUCKET}/tenants/demo/media/../../other/files/f",
        f"s3://{BUCKET}/tenants/demo/./media/med_1",
        f"s3://{BUCKET}/tenants/demo//media/med_1",
        f"s3://{BUCKET}/tenants/demo/media/a\\..\\..\\x",
        f"s3://{BUCKET}/tenants/demo/media/a\x00b",
        "s3://another-bucket/tenants/demo/media/med_1",  # the wrong bucket
        "https://example.com/tenants/demo/media/med_1",
        "data:,x",
    ],
)
def test_keys_that_are_not_the_tenants_are_media_not_found(url):
    with pytest.raises(MediaNotFound) as info:
        owned_key("demo", parse_reference(url), BUCKET)
    assert info.value.code == "media_not_found" and info.value.details == {"url": redact_url(url)}


def test_a_forged_reference_with_an_unsafe_id_is_media_not_found():
    with pytest.raises(MediaNotFound):
        owned_key("demo", Reference("file", "file-x", id="file-../../other/files/y"), BUCKET)
    with pytest.raises(MediaNotFound):
        owned_key("demo", Reference("media", "med_x", id=None), BUCKET)


def test_presigned_query_strings_and_credentials_never_survive_redaction():
    shown = redact_url(PRESIGNED)
    assert shown == "https://s3.example.com/llmgw-media/tenants/demo/media/med_x?<redacted>"
    assert "X-Amz-Signature" not in shown and "deadbeef" not in shown and "frag" not in shown
    assert redact_url("https://user:pass@example.com:8443/a?b=c") == "https://example.com:8443/a?<redacted>"
    assert redact_url("https://example.com/a#token=x") == "https://example.com/a"
    assert redact_url("https://example.com/a") == "https://example.com/a"
    assert redact_url("http://[::1]:9000/x?y") == "http://[::1]:9000/x?<redacted>"
    assert redact_url("s3://bucket/tenants/demo/media/med_1") == "s3://bucket/tenants/demo/media/med_1"
    broken = "https://user:pass@example.com:99999/a?X-Amz-Signature=s"  # urllib cannot read the port
    assert "pass" not in redact_url(broken) and "X-Amz-Signature" not in redact_url(broken)


def test_data_urls_are_redacted_to_their_type_and_size():
    body = b"x" * 1000
    url = f"data:image/png;base64,{base64.b64encode(body).decode()}"
    assert redact_url(url) == "data:image/png;base64,<1000 bytes>"
    assert redact_url("data:,hello") == "data:text/plain;base64,<5 bytes>"


def test_long_non_urls_are_cut():
    shown = redact_url("x" * 1000)
    assert len(shown) < 100 and shown.startswith("xxx")

"""PDF text extraction (``documents: extract``): the text put in a real PDF comes back, page by
page and marked; encrypted and broken PDFs are validation errors; chat PDF parts become text."""

from __future__ import annotations

import base64
import io

import pypdf
import pytest

from services.contracts.errors import ValidationError
from services.contracts.events import Message
from services.runtime.media.documents import TRUNCATED, as_text_parts, extract_text


def make_pdf(*pages: str) -> bytes:
    """A PDF whose page *i* shows the text ``pages[i]`` (Helvetica; built by hand, as a text
    object in each page's content stream)."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, text in enumerate(pages):
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode()
        objs.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]"
            b" /Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * i)
        )
        objs.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def encrypted(pdf: bytes, user_password: str) -> bytes:
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(pdf))
    writer.encrypt(user_password, owner_password="owner", algorithm="AES-256")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


MEMO = make_pdf("The launch code is tangerine", "Second page (with parentheses)")


def test_extracts_the_text_of_every_page_with_markers() -> None:
    assert extract_text(MEMO) == (
        "[page 1]\nThe launch code is tangerine\n\n[page 2]\nSecond page (with parentheses)"
    )
    assert extract_text(make_pdf("only one")) == "[page 1]\nonly one"


def test_long_text_is_cut_at_max_chars_and_marked() -> None:
    pdf = make_pdf(*(f"page number {i} says something" for i in range(50)))
    whole = extract_text(pdf)
    cut = extract_text(pdf, max_chars=100)
    assert len(cut) == 100 and cut.endswith(TRUNCATED)
    assert cut[: -len(TRUNCATED)] == whole[: 100 - len(TRUNCATED)]
    assert extract_text(pdf, max_chars=len(whole)) == whole


def test_encrypted_pdfs_are_refused_unless_the_empty_password_opens_them() -> None:
    with pytest.raises(ValidationError, match="encrypted"):
        extract_text(encrypted(MEMO, "secret"))
    assert "tangerine" in extract_text(encrypted(MEMO, ""))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"hello, not a pdf", "not a PDF"),
        (b"", "not a PDF"),
        (MEMO[:80], "cannot be read"),
        (b"%PDF-1.4\n" + b"\x00garbage" * 50, "cannot be read"),
    ],
)
def test_broken_pdfs_are_validation_errors(body: bytes, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        extract_text(body)
    assert info.value.code == "validation_error"


def b64(body: bytes) -> str:
    return base64.b64encode(body).decode()


def test_as_text_parts_replaces_pdf_parts_only() -> None:
    other = make_pdf("from a data url")
    media = {"media_id": "med_1", "mime_type": "application/pdf", "bytes": len(MEMO), "data": b64(MEMO)}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    messages = [
        Message(role="system", content="be brief"),
        Message(
            role="user",
            content=[
                {"type": "text", "text": "summarise"},
                {"type": "file", "file": {"filename": "memo.pdf", "file_id": "file-1"}, "media": media},
                image,
                {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{b64(other)}"}},
            ],
        ),
    ]
    out = as_text_parts(messages)
    assert out[0] is messages[0]
    assert out[1].content == [
        {"type": "text", "text": "summarise"},
        {
            "type": "text",
            "text": "memo.pdf\n[page 1]\nThe launch code is tangerine\n\n[page 2]\nSecond page (with parentheses)",
        },
        image,
        {"type": "text", "text": "document.pdf\n[page 1]\nfrom a data url"},
    ]
    assert isinstance(messages[1].content, list) and messages[1].content[1]["type"] == "file"  # a copy


def test_as_text_parts_leaves_other_files_and_names_from_media() -> None:
    text_file = {
        "type": "file",
        "file": {},
        "media": {"media_id": "m", "mime_type": "text/plain", "bytes": 2, "data": b64(b"hi")},
    }
    named = {
        "type": "file",
        "file": {},
        "media": {
            "media_id": "m2",
            "mime_type": "application/pdf",
            "bytes": len(MEMO),
            "data": b64(MEMO),
            "filename": "from-store.pdf",
        },
    }
    messages = [Message(role="user", content=[text_file, named])]
    out = as_text_parts(messages, max_chars=40)
    assert out[0].content == [
        text_file,
        {"type": "text", "text": "from-store.pdf\n" + extract_text(MEMO, max_chars=40)},
    ]


def test_as_text_parts_refuses_a_broken_pdf_and_media_without_bytes() -> None:
    broken = {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{b64(b'%PDF-1.4 nope')}"}}
    with pytest.raises(ValidationError, match=r"^document\.pdf: the PDF cannot be read"):
        as_text_parts([Message(role="user", content=[broken])])
    unfilled = {
        "type": "file",
        "file": {},
        "media": {"media_id": "m", "mime_type": "application/pdf", "bytes": 9},
    }
    with pytest.raises(RuntimeError, match="without its bytes"):
        as_text_parts([Message(role="user", content=[unfilled])])

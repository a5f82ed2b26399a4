"""The local broker's cluster id: what Kafka's storage tool accepts."""

from __future__ import annotations

import base64
import uuid

import pytest

from services.cli import infra


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # uuid4 bytes whose URL-safe base64 starts with "-" (0xf8 -> "-" in the first 6 bits), then good ones
    dashed = uuid.UUID(bytes=b"\xf8" + bytes(15))
    assert base64.urlsafe_b64encode(dashed.bytes).decode().startswith("-")
    ids = iter([dashed, dashed, uuid.UUID(bytes=b"\x10" + bytes(15))])
    monkeypatch.setattr(infra.uuid, "uuid4", lambda: next(ids))
    cid = infra._cluster_id()
    assert cid == base64.urlsafe_b64encode(b"\x10" + bytes(15)).decode().rstrip("=")
    assert len(cid) == 22 and not cid.startswith("-")

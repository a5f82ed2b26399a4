"""The claim check of Realtime frames (services/runtime/realtime_claims.py)."""

from __future__ import annotations

import pytest

from services.contracts.errors import MediaNotFound
from services.contracts.events import MediaRef
from services.runtime.media.storage import MemoryFileStorage
from services.runtime.realtime_claims import check_in, claim_key, redeem


async def test_small_events_stay_inline_and_large_ones_go_to_storage():
    storage = MemoryFileStorage()
    await storage.start()
    small = '{"type": "input_audio_buffer.append", "audio": "AAAA"}'
    data, ref = await check_in(
        small, storage=storage, limit=1024, tenant_id="t/1", session_id="s", direction="in", seq=0
    )
    assert (data, ref) == (small, None)
    big = '{"type": "input_audio_buffer.append", "audio": "' + "A" * 2000 + '"}'
    data, ref = await check_in(
        big, storage=storage, limit=1024, tenant_id="t/1", session_id="s", direction="in", seq=7
    )
    assert data is None and ref is not None
    assert ref.key == claim_key("t/1", "s", "in", 7) == "tenants/t%2F1/realtime/s/in-7.json"
    assert ref.bytes == len(big.encode())
    assert await redeem(ref, storage=storage, tenant_id="t/1") == big
    # a reference outside the session tenant's prefix is never read
    with pytest.raises(MediaNotFound):
        await redeem(ref, storage=storage, tenant_id="t")
    with pytest.raises(MediaNotFound):
        await redeem(ref, storage=None, tenant_id="t/1")


async def test_multibyte_text_is_measured_in_bytes_and_no_storage_keeps_it_inline():
    storage = MemoryFileStorage()
    await storage.start()
    text = "é" * 400  # 400 characters, 800 bytes
    data, ref = await check_in(
        text, storage=storage, limit=600, tenant_id="t", session_id="s", direction="out", seq=1
    )
    assert data is None and ref is not None and ref.bytes == 800
    assert await redeem(ref, storage=storage, tenant_id="t") == text
    data, ref = await check_in(
        text, storage=None, limit=600, tenant_id="t", session_id="s", direction="out", seq=2
    )
    assert (data, ref) == (text, None)
    assert MediaRef(media_id="x", mime_type="application/json", bytes=1).key is None

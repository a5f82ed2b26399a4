"""A job's result inline when small, in FileStorage when large (``job_results``)."""

from __future__ import annotations

from services.contracts.events import ChatRequested, ResultProduced
from services.runtime.job_results import result_key, spill, with_result
from services.runtime.jobs import job_state
from services.runtime.media.storage import MemoryFileStorage


def completed(text: str):
    req = ChatRequested(
        request_id="j1", tenant_id="t a", model="m", messages=[{"role": "user", "content": "x"}], job=True
    )
    res = ResultProduced(request_id="j1", tenant_id="t a", status="ok", message={"content": text})
    return job_state(req, "completed", result=res)


async def test_a_small_result_stays_inline():
    storage = MemoryFileStorage()
    state = completed("short")
    assert await spill(state, storage, 1000, 60) is state
    assert storage.objects == {}


async def test_a_large_result_is_stored_under_the_tenant_and_read_back_whole():
    storage = MemoryFileStorage()
    state = completed("x" * 5000)
    out = await spill(state, storage, 1000, 60)
    assert out.result is None and out.result_ref is not None
    ref = out.result_ref
    assert ref.key == result_key("t a", "j1") == "tenants/t%20a/jobs/j1/result.json"
    assert ref.mime_type == "application/json" and ref.bytes > 5000 and ref.url and ref.url_expires_at
    body = await storage.get(ref.key)
    assert with_result(out, body).result == state.result
    # the record on the topic stays small: the answer is not in it
    assert len(out.model_dump_json()) < 1000

"""The job view's rules, without a broker: states only move forward, tenants only see their own,
finished jobs expire, waiters wake once a job ends."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from services.contracts.errors import JobExpired, JobNotFound
from services.contracts.events import ChatRequested, ErrorInfo, ResultProduced, utcnow
from services.runtime.jobs import JobsView, job_key, job_state, outcome_state
from services.runtime.topics import Topics

ROOT = Path(__file__).resolve().parents[3]


def view(retention_s: float = 3600) -> JobsView:
    return JobsView("127.0.0.1:1", Topics.load(ROOT / "topics.yaml"), retention_s=retention_s)


def req(tenant: str = "t", rid: str = "j1") -> ChatRequested:
    return ChatRequested(
        request_id=rid, tenant_id=tenant, model="m", messages=[{"role": "user", "content": "x"}], job=True
    )


def result(status: str = "ok") -> ResultProduced:
    err = ErrorInfo(code="cancelled", message="stop") if status == "cancelled" else None
    return ResultProduced(
        request_id="j1",
        tenant_id="t",
        status="ok" if status == "ok" else "error",
        error=err,
        message={"content": "hi"},
    )


def test_states_only_move_forward_and_a_terminal_state_is_final():
    v, r = view(), req()
    v.apply(job_state(r, "pending"))
    v.apply(job_state(r, "running"))
    v.apply(job_state(r, "pending"))  # a replayed older record
    assert v.get("t", "j1").status == "running"
    v.apply(outcome_state(r, result(), started_at=utcnow()))
    v.apply(job_state(r, "running"))  # a plan run again after a restart
    v.apply(outcome_state(r, result("cancelled"), started_at=None))
    job = v.get("t", "j1")
    assert job.status == "completed" and job.result is not None and job.result.message.content == "hi"
    assert job.created_at == r.occurred_at


def test_another_tenant_sees_no_job_and_old_jobs_expire():
    v, r = view(retention_s=60), req()
    v.apply(job_state(r, "pending"))
    with pytest.raises(JobNotFound):
        v.get("other", "j1")
    with pytest.raises(JobNotFound):
        v.get("t", "nope")
    done = outcome_state(r, result(), started_at=None)
    v.apply(done.model_copy(update={"finished_at": utcnow() - timedelta(seconds=61)}))
    with pytest.raises(JobExpired):
        v.get("t", "j1")


def test_a_cancel_result_ends_the_job_cancelled():
    job = outcome_state(req(), result("cancelled"), started_at=None)
    assert job.status == "cancelled" and job.error is not None and job.finished_at is not None


async def test_wait_returns_once_the_job_ends():
    v, r = view(), req()
    v.apply(job_state(r, "running"))
    waiting = asyncio.ensure_future(v.wait("t", "j1", timeout_s=5))
    await asyncio.sleep(0)
    assert not waiting.done()
    v.apply(outcome_state(r, result(), started_at=None))
    assert (await waiting).status == "completed"
    # a job not seen yet is waited for; another tenant's job of the same id does not end it
    other = asyncio.ensure_future(v.wait("x", "j2", timeout_s=5))
    await asyncio.sleep(0)
    v.apply(outcome_state(req(rid="j2"), result(), started_at=None).model_copy(update={"job_id": "j2"}))
    await asyncio.sleep(0)
    assert not other.done()
    v.apply(outcome_state(req(tenant="x", rid="j2"), result("cancelled"), started_at=None))
    assert (await other).status == "cancelled"


def test_two_tenants_jobs_of_one_id_are_two_jobs():
    """Job ids are request ids, which callers may choose: one tenant's records never touch another's."""
    v = view()
    v.apply(job_state(req("a", "same"), "pending"))
    v.apply(outcome_state(req("b", "same"), result(), started_at=None))
    assert v.get("a", "same").status == "pending" and v.get("b", "same").status == "completed"
    assert job_key(job_state(req("a", "same"), "pending")) != job_key(job_state(req("b", "same"), "pending"))

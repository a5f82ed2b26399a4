"""Batch records (services/runtime/batches.py): the merge rule of ``llm.batches``, state moves,
ids, item outcomes; the batch service's item table and path choice (services/batches)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.batches.app import choose_path
from services.batches.items import STARTED, BatchItems, ItemsTable
from services.contracts.events import (
    BatchCounts,
    BatchItem,
    BatchUpdated,
    ErrorInfo,
    JobUpdated,
    Price,
    Usage,
    utcnow,
)
from services.runtime.batches import (
    InvalidTransition,
    batch_of_file,
    error_file_id,
    item_id,
    item_outcome,
    moved,
    newer,
    output_file_id,
    run_id,
    stop_outcome,
)
from services.runtime.config import GatewayConfig
from services.runtime.pricing import cost_usd
from services.runtime.settings import ROOT
from services.runtime.topics import Topics


def batch(status: str = "validating", **kw) -> BatchUpdated:
    now = utcnow()
    return BatchUpdated(
        request_id="batch_1",
        tenant_id="t",
        batch_id="batch_1",
        api="openai",
        status=status,
        endpoint="/v1/chat/completions",
        requests_key="tenants/t/batches/batch_1/requests.jsonl",
        completion_window_s=86400,
        created_at=now,
        expires_at=now + timedelta(days=1),
        counts=kw.pop("counts", BatchCounts(total=10)),
        **kw,
    )


def job(status: str, index: int = 0, code: str | None = None, batch_id: str = "batch_1") -> JobUpdated:
    return JobUpdated(
        request_id=item_id(batch_id, index),
        tenant_id="t",
        job_id=item_id(batch_id, index),
        status=status,
        operation="chat",
        created_at=utcnow(),
        error=ErrorInfo(code=code, message="x") if code else None,
        batch=BatchItem(batch_id=batch_id, custom_id=f"c{index}", index=index),
    )


def test_ids_round_trip_and_never_collide_with_item_ids():
    assert item_id("batch_x", 3) == "batch_x.3" and run_id("batch_x") == "batch_x.run"
    assert batch_of_file(output_file_id("batch_a-b")) == ("batch_a-b", "output")
    assert batch_of_file(error_file_id("msgbatch_Z9")) == ("msgbatch_Z9", "errors")
    assert batch_of_file("file-abc123") is None and batch_of_file("file--output") is None
    assert batch_of_file("batch_x-output") is None


def test_moved_stamps_the_state_once_and_refuses_what_the_machine_forbids():
    b = moved(batch(), "in_progress", path="requests")
    assert b.status == "in_progress" and b.in_progress_at is not None and b.path == "requests"
    again = moved(b, "in_progress")
    assert again.in_progress_at == b.in_progress_at and again.event_id != b.event_id
    with pytest.raises(InvalidTransition):
        moved(b, "completed")  # finalizing first
    with pytest.raises(InvalidTransition):
        moved(moved(b, "cancelling"), "finalizing")


def test_newer_moves_forward_only_and_keeps_what_a_later_writer_did_not_know():
    b0 = batch()
    b1 = moved(b0, "in_progress", path="provider", run_id="batch_1.run")
    assert newer(None, b0) is b0
    assert newer(b1, b0) is None  # a redelivered validating record changes nothing
    cancel = moved(b1, "cancelling")
    # the service's count written before it read the cancel: the count stands, the cancel too
    late = b1.model_copy(update={"counts": BatchCounts(total=10, succeeded=4)})
    merged = newer(cancel, late)
    assert merged is not None and merged.status == "cancelling" and merged.counts.succeeded == 4
    assert merged.cancelling_at == cancel.cancelling_at
    # a record without the path or the run id keeps the view's (the edge writes the cancel from
    # what it read, perhaps before the service chose them)
    edge_cancel = moved(b0, "cancelling")
    kept = newer(b1, edge_cancel)
    assert kept is not None and kept.path == "provider" and kept.run_id == "batch_1.run"
    assert kept.in_progress_at == b1.in_progress_at
    # counts never go back
    ahead = b1.model_copy(update={"counts": BatchCounts(total=10, succeeded=6)})
    behind = moved(b1, "in_progress", counts=BatchCounts(total=10, succeeded=2))
    back = newer(ahead, behind)
    assert back is not None and back.counts.succeeded == 6
    done = moved(moved(ahead, "finalizing"), "completed")
    assert newer(done, moved(b1, "cancelling")) is None  # ended is ended
    # finalizing and cancelling: the first one stands
    assert newer(moved(b1, "finalizing"), moved(b1, "cancelling")) is None


def test_item_outcomes_from_job_records():
    assert item_outcome(job("pending")) is None and item_outcome(job("running")) is None
    assert item_outcome(job("completed")) == "succeeded"
    assert item_outcome(job("failed", code="provider_error")) == "errored"
    assert item_outcome(job("failed", code="batch_expired")) == "expired"
    assert item_outcome(job("cancelled", code="cancelled")) == "canceled"
    assert stop_outcome("cancelled") == "canceled" and stop_outcome("expired") == "expired"
    assert stop_outcome("failed") == "errored"


def test_items_table_counts_each_item_once_whatever_the_order():
    seen: list[tuple[str, str]] = []
    topics = Topics.load(ROOT / "topics.yaml")
    table = ItemsTable("127.0.0.1:1", topics, on_change=lambda t, b: seen.append((t, b)))  # never started
    table.apply(job("pending", 0))
    table.apply(job("completed", 0))
    table.apply(job("completed", 0))  # a duplicate
    table.apply(job("running", 0))  # late and older: the outcome stands
    table.apply(job("completed", 1))  # its pending record not read yet
    table.apply(job("failed", 2, "rate_limited"))
    items = table.of("t", "batch_1")
    assert items.states == {0: "succeeded", 1: "succeeded", 2: "errored"}
    assert (items.succeeded, items.errored, items.running, items.ended) == (2, 1, 0, 3)
    assert len(seen) == 4  # pending, completed(0), completed(1), failed(2)
    assert items.counts(10) == BatchCounts(total=10, succeeded=2, errored=1)
    assert items.counts(10, "canceled") == BatchCounts(total=10, succeeded=2, errored=1, canceled=7)
    run = JobUpdated(
        request_id=run_id("batch_1"),
        tenant_id="t",
        job_id=run_id("batch_1"),
        status="failed",
        operation="batch.run",
        created_at=utcnow(),
        error=ErrorInfo(code="provider_error", message="down"),
    )
    table.apply(run)
    assert items.run_status == "failed" and items.run_error is not None
    other = BatchItems()
    assert other.record(0, None) and other.states == {0: STARTED} and other.running == 1


def _config(batch_api: bool, kind: str = "openai") -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "tenants": {"guarded": {"hooks": ["pii_redaction"]}},
            "providers": {
                "p": {"kind": kind, "base_url": "http://x", "batch_api": batch_api},
                "o": {"kind": "ollama", "base_url": "http://y"},
            },
            "models": {
                "a": {"deployments": [{"provider": "p", "model": "m"}]},
                "b": {"deployments": [{"provider": "o", "model": "m"}, {"provider": "p", "model": "m"}]},
            },
        }
    )


def test_the_provider_path_needs_one_alias_first_served_by_a_batch_api():
    assert choose_path(_config(True), batch(model="a")) == "provider"
    assert choose_path(_config(False), batch(model="a")) == "requests"
    assert choose_path(_config(True), batch(model=None)) == "requests"  # lines of several aliases
    assert choose_path(_config(True), batch(model="b")) == "requests"  # first deployment: no batch API
    assert choose_path(_config(True, "anthropic"), batch(model="a")) == "provider"
    embeddings = batch(model="a").model_copy(update={"endpoint": "/v1/embeddings"})
    assert choose_path(_config(True, "anthropic"), embeddings) == "requests"
    assert choose_path(_config(True), embeddings) == "provider"


def _line(content) -> bytes:
    from services.contracts.events import ChatRequested, Message

    req = ChatRequested(
        request_id="batch_1.0", tenant_id="t", model="a", messages=[Message(role="user", content=content)]
    )
    return req.model_dump_json().encode()


def test_hooks_and_media_keep_a_batch_on_the_requests_path():
    """The provider path skips the tenant's pre-call hooks and the media-store: a tenant with
    hooks, or a batch with a media part, runs its items as requests."""
    config = _config(True)
    text = [_line("hello"), _line([{"type": "text", "text": "an image_url, only named"}])]
    assert choose_path(config, batch(model="a"), text) == "provider"
    image = _line([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])
    assert choose_path(config, batch(model="a"), [*text, image]) == "requests"
    guarded = batch(model="a").model_copy(update={"tenant_id": "guarded"})
    assert choose_path(config, guarded, text) == "requests"


def test_a_batch_item_costs_less_the_batch_discount():
    class Dep:
        price = Price(input_per_mtok=2.0, output_per_mtok=8.0, batch_discount=0.5)

    u = Usage(prompt_tokens=1000, completion_tokens=500, total_tokens=1500)
    assert cost_usd(u, Dep()) == pytest.approx(0.006)
    assert cost_usd(u, Dep(), batch=True) == pytest.approx(0.003)
    Dep.price = Price(input_per_mtok=2.0, output_per_mtok=8.0, batch_discount=0.0)
    assert cost_usd(u, Dep(), batch=True) == pytest.approx(0.006)


def test_a_line_is_its_batchs_own_or_foreign():
    from services.contracts.events import ChatRequested, Message
    from services.runtime.batches import foreign_item

    def line(tenant: str = "t", batch_id: str = "batch_1", index: int = 2, rid: str | None = None):
        return ChatRequested(
            request_id=rid or item_id(batch_id, index),
            tenant_id=tenant,
            model="a",
            messages=[Message(role="user", content="x")],
            batch=BatchItem(batch_id=batch_id, custom_id="c", index=index),
        )

    assert foreign_item(line(), "t", "batch_1", 2) is None
    assert foreign_item(line(tenant="u"), "t", "batch_1", 2) == "is another tenant's"
    assert foreign_item(line(batch_id="batch_2"), "t", "batch_1", 2) == "is not item 2 of batch batch_1"
    assert foreign_item(line(index=3), "t", "batch_1", 2) == "is not item 2 of batch batch_1"
    assert "has request id" in (foreign_item(line(rid="x"), "t", "batch_1", 2) or "")

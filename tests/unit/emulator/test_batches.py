"""The emulated batch APIs (OpenAI files + batches, Anthropic message batches) on a hand-driven
clock: the state machine, progress, results computed like single calls, cancellation, expiry,
and the official ``openai`` and ``anthropic`` SDKs parsing it all with their own types."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse
from openai.types import Batch, FileObject

from services.emulator import batches_api
from services.emulator.batch_clock import Timeline
from services.emulator.common import EmulatorApp
from services.emulator.job_scenario import JobScenario

from .jobs_support import asgi_client, clocked_app, serve_app

T0 = 1000.0  # the fake clock's start


def chat_line(
    custom_id: str, model: str = "gpt-emu", text: str = "hello there", **body: Any
) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": text}], **body},
    }


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def read_jsonl(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


async def upload(client: httpx.AsyncClient, data: bytes, purpose: str = "batch") -> dict[str, Any]:
    r = await client.post("/v1/files", data={"purpose": purpose}, files={"file": ("in.jsonl", data)})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def start(
    client: httpx.AsyncClient, lines: list[Any], endpoint: str = "/v1/chat/completions", **kw: Any
):
    stored = await upload(client, jsonl(lines))
    r = await client.post(
        "/v1/batches",
        json={"input_file_id": stored["id"], "endpoint": endpoint, "completion_window": "24h"},
        **kw,
    )
    assert r.status_code == 200, r.text
    return r.json()


# --- the timeline (pure) ------------------------------------------------------------------------


def test_timeline_phases():
    job = JobScenario(batch_items_per_s=10, batch_validating_ms=500, batch_finalizing_ms=200)
    line = Timeline(0.0, 20, job)
    assert [(p.status, p.finished) for p in map(line.at, [0, 0.49, 0.5, 0.6, 1.5, 2.49])] == [
        ("validating", 0),
        ("validating", 0),
        ("in_progress", 0),
        ("in_progress", 1),
        ("in_progress", 10),
        ("in_progress", 19),
    ]
    assert (line.at(2.5).status, line.at(2.5).finished) == ("finalizing", 20)
    done = line.at(2.7)
    assert done.status == "completed" and done.terminal
    assert done.times == pytest.approx({"in_progress_at": 0.5, "finalizing_at": 2.5, "completed_at": 2.7})


def test_timeline_cancel_expire_and_invalid():
    job = JobScenario(batch_items_per_s=10, batch_validating_ms=0, batch_cancel_ms=300, batch_window_s=1.05)
    cancelled = Timeline(0.0, 100, job, cancel_at=0.55)
    assert (cancelled.at(0.6).status, cancelled.at(0.6).finished) == ("cancelling", 5)
    assert (cancelled.at(9).status, cancelled.at(9).finished) == (
        "cancelled",
        5,
    )  # nothing runs after the cancel
    assert cancelled.at(9).times["cancelled_at"] == pytest.approx(0.85)
    expiring = Timeline(0.0, 100, job)
    assert expiring.at(1.0).status == "in_progress"
    assert (expiring.at(1.05).status, expiring.at(50).finished) == ("expired", 10)
    invalid = Timeline(0.0, 3, JobScenario(batch_validating_ms=100), invalid=True)
    assert [invalid.at(t).status for t in (0.05, 0.1)] == ["validating", "failed"] and invalid.at(
        5
    ).finished == 0


def test_parse_input_reports_each_bad_line():
    data = b"\n".join(
        [
            orjson.dumps(chat_line("a")),
            b"{not json",
            orjson.dumps(chat_line("a")),
            orjson.dumps({**chat_line("b"), "url": "/v1/embeddings"}),
            orjson.dumps({**chat_line("c"), "method": "GET"}),
            orjson.dumps({"custom_id": "d", "method": "POST", "url": "/v1/chat/completions"}),
            orjson.dumps({**chat_line("x"), "custom_id": ""}),
        ]
    )
    lines, errors = batches_api.parse_input(data, "/v1/chat/completions")
    assert [line.custom_id for line in lines] == ["a"]
    assert [(e["code"], e["line"]) for e in errors] == [
        ("invalid_json_line", 2),
        ("duplicate_custom_id", 3),
        ("mismatched_url", 4),
        ("invalid_method", 5),
        ("missing_body", 6),
        ("missing_custom_id", 7),
    ]
    assert batches_api.parse_input(b"\n\n", "/v1/embeddings")[1][0]["code"] == "empty_file"


# --- OpenAI files -------------------------------------------------------------------------------


async def test_files_upload_list_retrieve_content_delete():
    app, _ = clocked_app()
    async with asgi_client(app) as client:
        stored = await upload(client, b'{"a": 1}\n')
        assert stored["object"] == "file" and stored["id"].startswith("file-")
        assert (stored["bytes"], stored["purpose"], stored["filename"], stored["status"]) == (
            9,
            "batch",
            "in.jsonl",
            "processed",
        )
        assert stored["expires_at"] == stored["created_at"] + 30 * 86400
        other = await upload(client, b"x", purpose="user_data")
        assert other["expires_at"] is None
        assert (await client.get(f"/v1/files/{stored['id']}")).json() == stored
        assert (await client.get(f"/v1/files/{stored['id']}/content")).content == b'{"a": 1}\n'
        assert (await client.delete(f"/v1/files/{stored['id']}")).json() == {
            "id": stored["id"],
            "object": "file",
            "deleted": True,
        }
        assert (await client.get(f"/v1/files/{stored['id']}/content")).status_code == 404
        bad = await client.post("/v1/files", data={"purpose": "nope"}, files={"file": ("a", b"x")})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "purpose"
        missing = await client.post("/v1/files", data={"purpose": "batch"}, files={"other": ("a", b"x")})
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"


async def test_files_list():
    # through this module's routes alone: in create_app() the Gemini emulation's GET /v1/files
    # currently takes the fast path (see the report on EmulatorApp.fast_routes)
    app = EmulatorApp(routes=batches_api.routes())
    async with asgi_client(app) as client:
        stored = await upload(client, b"{}\n")
        other = await upload(client, b"x", purpose="user_data")
        listed = (await client.get("/v1/files")).json()
        assert listed["object"] == "list" and [f["id"] for f in listed["data"]] == [other["id"], stored["id"]]
        assert [f["id"] for f in (await client.get("/v1/files?purpose=batch")).json()["data"]] == [
            stored["id"]
        ]
        assert [f["id"] for f in (await client.get("/v1/files?limit=1&order=asc")).json()["data"]] == [
            stored["id"]
        ]


async def test_gemini_files_on_v1_still_reach_gemini():
    app, _ = clocked_app()
    async with asgi_client(app) as client:
        gemini = {"x-goog-api-key": "k"}
        missing = await client.get("/v1/files/abc123", headers=gemini)
        assert missing.status_code == 403 and missing.json()["error"]["status"] == "PERMISSION_DENIED"
        assert (await client.delete("/v1/files/abc123", params={"key": "k"})).status_code == 403
        openai_missing = await client.get("/v1/files/abc123")
        assert (
            openai_missing.status_code == 404
            and openai_missing.json()["error"]["type"] == "invalid_request_error"
        )


# --- OpenAI batches -----------------------------------------------------------------------------


async def test_chat_batch_lifecycle_counts_results_and_usage():
    app, clock = clocked_app()
    scenario = "batch_items_per_s=10,batch_validating_ms=500,batch_finalizing_ms=200"
    lines = [
        chat_line(f"req-{i}", f"gpt-emu@{scenario},tokens={i + 1}", f"question number {i}") for i in range(20)
    ]
    lines[3] = chat_line("req-3", "gpt-emu@status=400")  # answered with the provider's 400
    async with asgi_client(app) as client:
        batch = await start(client, lines, headers={"x-emulator-scenario": "batch_cancel_ms=1"})
        assert batch["object"] == "batch" and batch["id"].startswith("batch_")
        assert (batch["status"], batch["model"], batch["endpoint"]) == (
            "validating",
            "gpt-emu",
            "/v1/chat/completions",
        )
        assert batch["request_counts"] == {"total": 20, "completed": 0, "failed": 0}
        assert batch["expires_at"] == batch["created_at"] + 86400 and batch["in_progress_at"] is None
        url = f"/v1/batches/{batch['id']}"

        async def at(seconds: float) -> dict[str, Any]:
            clock.now = T0 + seconds
            return (await client.get(url)).json()

        assert (await at(0.4))["status"] == "validating"
        half = await at(0.5 + 1.0)
        assert half["status"] == "in_progress" and half["in_progress_at"] is not None
        assert half["request_counts"] == {"total": 20, "completed": 9, "failed": 1}
        assert half["output_file_id"] is None
        assert (await at(2.5))["status"] == "finalizing"
        done = await at(2.7)
        assert done["status"] == "completed" and done["completed_at"] is not None
        assert done["request_counts"] == {"total": 20, "completed": 19, "failed": 1}
        output = read_jsonl((await client.get(f"/v1/files/{done['output_file_id']}/content")).content)
        errors = read_jsonl((await client.get(f"/v1/files/{done['error_file_id']}/content")).content)
        assert [o["custom_id"] for o in output] == [f"req-{i}" for i in range(20) if i != 3]
        [failed] = errors
        assert failed["custom_id"] == "req-3" and failed["error"] is None
        assert failed["response"]["status_code"] == 400 and failed["response"]["body"]["error"]["type"]
        # each answer is what the chat endpoint itself answers for that request
        first = output[0]
        assert first["id"].startswith("batch_req_") and first["error"] is None
        assert first["response"]["status_code"] == 200 and first["response"]["request_id"].startswith("req_")
        direct = (
            await client.post("/v1/chat/completions", json={**lines[0]["body"], "model": "gpt-emu@tokens=1"})
        ).json()
        answer = first["response"]["body"]
        assert answer["choices"][0]["message"] == direct["choices"][0]["message"]
        assert answer["usage"] == direct["usage"] and answer["model"] == "gpt-emu"
        assert output[-1]["response"]["body"]["usage"]["completion_tokens"] == 20
        usage = done["usage"]
        bodies = [o["response"]["body"]["usage"] for o in output]
        assert usage["input_tokens"] == sum(u["prompt_tokens"] for u in bodies)
        assert usage["output_tokens"] == sum(u["completion_tokens"] for u in bodies)
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        output_file = (await client.get(f"/v1/files/{done['output_file_id']}")).json()
        assert output_file["purpose"] == "batch_output"
        # every request was answered once, logged with the batch's own path
        calls = [c for c in (await client.get("/_emulator/calls?kind=chat")).json() if c["path"] == url]
        assert len(calls) == 20 and calls[0]["inputs"] == ["question number 0"]
        assert (await at(100))["request_counts"] == done["request_counts"]
        assert len((await client.get("/_emulator/calls?kind=chat")).json()) == 21
        refused = await client.post(f"{url}/cancel")
        assert refused.status_code == 409


async def test_embeddings_batch():
    app, clock = clocked_app()
    lines = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-emu", "input": f"text {i}"},
        }
        for i in range(3)
    ]
    async with asgi_client(app) as client:
        batch = await start(client, lines, endpoint="/v1/embeddings")
        clock.advance(10)
        done = (await client.get(f"/v1/batches/{batch['id']}")).json()
        assert done["status"] == "completed" and done["error_file_id"] is None
        output = read_jsonl((await client.get(f"/v1/files/{done['output_file_id']}/content")).content)
        direct = (await client.post("/v1/embeddings", json=lines[2]["body"])).json()
        assert output[2]["response"]["body"]["data"] == direct["data"]
        assert done["usage"]["input_tokens"] == 6 and done["usage"]["output_tokens"] == 0


async def test_cancel_half_way_stops_the_rest():
    app, clock = clocked_app()
    lines = [
        chat_line(f"c{i}", "gpt-emu@batch_items_per_s=10,batch_validating_ms=0,batch_cancel_ms=300")
        for i in range(40)
    ]
    async with asgi_client(app) as client:
        batch = await start(client, lines)
        url = f"/v1/batches/{batch['id']}"
        clock.advance(1.25)
        cancelling = (await client.post(f"{url}/cancel")).json()
        assert cancelling["status"] == "cancelling" and cancelling["cancelling_at"] is not None
        assert cancelling["request_counts"] == {"total": 40, "completed": 12, "failed": 0}
        assert (await client.post(f"{url}/cancel")).json()["status"] == "cancelling"  # again: as it is
        clock.advance(0.3)
        cancelled = (await client.get(url)).json()
        assert cancelled["status"] == "cancelled" and cancelled["cancelled_at"] is not None
        assert cancelled["request_counts"] == {"total": 40, "completed": 12, "failed": 28}
        output = read_jsonl((await client.get(f"/v1/files/{cancelled['output_file_id']}/content")).content)
        errors = read_jsonl((await client.get(f"/v1/files/{cancelled['error_file_id']}/content")).content)
        assert [o["custom_id"] for o in output] == [f"c{i}" for i in range(12)]
        assert [e["custom_id"] for e in errors] == [f"c{i}" for i in range(12, 40)]
        assert {(e["response"] is None, e["error"]["code"]) for e in errors} == {(True, "batch_cancelled")}
        calls = [c for c in (await client.get("/_emulator/calls")).json() if c["path"] == url]
        assert len(calls) == 12  # nothing after the cancel ran


async def test_window_expiry():
    app, clock = clocked_app()
    lines = [
        chat_line(f"x{i}", "gpt-emu@batch_items_per_s=2,batch_validating_ms=0,batch_window_s=2")
        for i in range(10)
    ]
    async with asgi_client(app) as client:
        batch = await start(client, lines)
        clock.advance(5)
        expired = (await client.get(f"/v1/batches/{batch['id']}")).json()
        assert expired["status"] == "expired" and expired["expired_at"] == batch["created_at"] + 2
        assert expired["request_counts"] == {"total": 10, "completed": 4, "failed": 6}
        errors = read_jsonl((await client.get(f"/v1/files/{expired['error_file_id']}/content")).content)
        assert [e["error"]["code"] for e in errors] == ["batch_expired"] * 6


async def test_validation_failure_and_batch_fail_scenario():
    app, clock = clocked_app()
    async with asgi_client(app) as client:
        bad = await start(client, [chat_line("a"), {"custom_id": "b"}])
        ok = await start(client, [chat_line("a", "gpt-emu@batch_fail=1")])
        clock.advance(1)
        failed = (await client.get(f"/v1/batches/{bad['id']}")).json()
        assert failed["status"] == "failed" and failed["failed_at"] is not None
        assert failed["errors"]["object"] == "list"
        assert [(e["code"], e["line"]) for e in failed["errors"]["data"]] == [("invalid_method", 2)]
        assert failed["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
        assert failed["output_file_id"] is None and failed["error_file_id"] is None
        forced = (await client.get(f"/v1/batches/{ok['id']}")).json()
        assert forced["status"] == "failed" and forced["errors"]["data"][0]["code"] == "emulator_batch_fail"
        assert (await client.get("/_emulator/calls")).json() == []


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"endpoint": "/v1/chat/completions", "completion_window": "24h"}, 400, "input_file_id"),
        (
            {"input_file_id": "file-nope", "endpoint": "/v1/chat/completions", "completion_window": "24h"},
            404,
            "input_file_id",
        ),
        ({"input_file_id": "F", "endpoint": "/v1/nothing", "completion_window": "24h"}, 400, "endpoint"),
        ({"input_file_id": "F", "endpoint": "/v1/responses", "completion_window": "24h"}, 400, "endpoint"),
        (
            {"input_file_id": "F", "endpoint": "/v1/embeddings", "completion_window": "1h"},
            400,
            "completion_window",
        ),
        (
            {
                "input_file_id": "F",
                "endpoint": "/v1/embeddings",
                "completion_window": "24h",
                "metadata": {"a": 1},
            },
            400,
            "metadata",
        ),
    ],
)
async def test_invalid_batch_creates(body, status, param):
    app, _ = clocked_app()
    async with asgi_client(app) as client:
        stored = await upload(client, jsonl([chat_line("a")]))
        if body.get("input_file_id") == "F":
            body = {**body, "input_file_id": stored["id"]}
        r = await client.post("/v1/batches", json=body)
        assert r.status_code == status and r.json()["error"]["param"] == param


async def test_batch_list_newest_first_and_unknown_ids():
    app, _ = clocked_app()
    async with asgi_client(app) as client:
        first = await start(client, [chat_line("a")])
        second = await start(client, [chat_line("a")], headers={})
        listed = (await client.get("/v1/batches")).json()
        assert [b["id"] for b in listed["data"]] == [second["id"], first["id"]] and listed[
            "has_more"
        ] is False
        page = (await client.get("/v1/batches", params={"limit": 1})).json()
        assert page["has_more"] is True and page["last_id"] == second["id"]
        rest = (await client.get("/v1/batches", params={"after": second["id"]})).json()
        assert [b["id"] for b in rest["data"]] == [first["id"]]
        assert (await client.get("/v1/batches/batch_nope")).status_code == 404
        assert (await client.post("/v1/batches/batch_nope/cancel")).status_code == 404


# --- Anthropic message batches ------------------------------------------------------------------


def message_request(
    custom_id: str, model: str = "claude-emu", text: str = "hi there", **params: Any
) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "params": {
            "model": model,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": text}],
            **params,
        },
    }


async def test_message_batch_lifecycle_and_shuffled_results():
    app, clock = clocked_app()
    scenario = "batch_items_per_s=10,batch_validating_ms=0,batch_finalizing_ms=0,batch_seed=7"
    requests = [
        message_request(f"m{i}", f"claude-emu@{scenario},tokens={i + 1}", f"ask {i}") for i in range(20)
    ]
    requests[5] = message_request("m5", "claude-emu@status=529")
    async with asgi_client(app) as client:
        r = await client.post("/v1/messages/batches", json={"requests": requests})
        assert r.status_code == 200, r.text
        batch = r.json()
        assert batch["type"] == "message_batch" and batch["id"].startswith("msgbatch_")
        assert batch["processing_status"] == "in_progress" and batch["results_url"] is None
        assert batch["request_counts"] == {
            "processing": 20,
            "succeeded": 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        }
        assert batch["created_at"].endswith("Z") and batch["ended_at"] is None
        url = f"/v1/messages/batches/{batch['id']}"
        clock.advance(1.0)
        running = (await client.get(url)).json()
        assert running["request_counts"] == {
            "processing": 10,
            "succeeded": 9,
            "errored": 1,
            "canceled": 0,
            "expired": 0,
        }
        assert (await client.get(f"{url}/results")).status_code == 404
        clock.advance(1.0)
        ended = (await client.get(url)).json()
        assert ended["processing_status"] == "ended" and ended["ended_at"].endswith("Z")
        assert ended["results_url"] == f"http://emulator{url}/results"
        body = (await client.get(f"{url}/results")).content
        results = read_jsonl(body)
        order = [r["custom_id"] for r in results]
        assert sorted(order) == sorted(f"m{i}" for i in range(20)) and order != [f"m{i}" for i in range(20)]
        assert (await client.get(f"{url}/results")).content == body  # the same order on every read
        by_id = {r["custom_id"]: r["result"] for r in results}
        assert (
            by_id["m5"]["type"] == "errored" and by_id["m5"]["error"]["error"]["type"] == "overloaded_error"
        )
        direct = (
            await client.post("/v1/messages", json={**requests[2]["params"], "model": "claude-emu@tokens=3"})
        ).json()
        message = by_id["m2"]["message"]
        assert by_id["m2"]["type"] == "succeeded"
        assert message["content"] == direct["content"] and message["usage"] == direct["usage"]
        assert message["model"] == "claude-emu"
        assert (await client.post(f"{url}/cancel")).status_code == 400  # ended


async def test_message_batch_cancel_expire_delete_list():
    app, clock = clocked_app()
    slow = "claude-emu@batch_items_per_s=10,batch_validating_ms=0,batch_cancel_ms=100"
    async with asgi_client(app) as client:
        cancel_me = (
            await client.post(
                "/v1/messages/batches", json={"requests": [message_request(f"c{i}", slow) for i in range(30)]}
            )
        ).json()
        expiring = (
            await client.post(
                "/v1/messages/batches",
                json={"requests": [message_request(f"e{i}", slow) for i in range(30)]},
                headers={"x-emulator-scenario": "batch_window_s=1.55"},
            )
        ).json()
        url = f"/v1/messages/batches/{cancel_me['id']}"
        assert (await client.delete(url)).status_code == 400  # still processing
        clock.advance(0.75)
        canceling = (await client.post(f"{url}/cancel")).json()
        assert canceling["processing_status"] == "canceling" and canceling["cancel_initiated_at"]
        clock.advance(5)
        ended = (await client.get(url)).json()
        assert ended["request_counts"] == {
            "processing": 0,
            "succeeded": 7,
            "errored": 0,
            "canceled": 23,
            "expired": 0,
        }
        kinds = [r["result"]["type"] for r in read_jsonl((await client.get(f"{url}/results")).content)]
        assert kinds.count("succeeded") == 7 and kinds.count("canceled") == 23
        gone = (await client.get(f"/v1/messages/batches/{expiring['id']}")).json()
        assert gone["request_counts"]["expired"] == 15 and gone["request_counts"]["succeeded"] == 15
        listed = (await client.get("/v1/messages/batches")).json()
        assert [b["id"] for b in listed["data"]] == [expiring["id"], cancel_me["id"]] and not listed[
            "has_more"
        ]
        first = (await client.get("/v1/messages/batches", params={"limit": 1})).json()
        assert first["has_more"] and first["last_id"] == expiring["id"]
        after = (await client.get("/v1/messages/batches", params={"after_id": expiring["id"]})).json()
        assert [b["id"] for b in after["data"]] == [cancel_me["id"]]
        before = (await client.get("/v1/messages/batches", params={"before_id": cancel_me["id"]})).json()
        assert [b["id"] for b in before["data"]] == [expiring["id"]]
        assert (await client.delete(url)).json() == {"id": cancel_me["id"], "type": "message_batch_deleted"}
        assert (await client.get(url)).status_code == 404


@pytest.mark.parametrize(
    "requests",
    [
        [],
        [{"custom_id": "bad id!", "params": {}}],
        [message_request("a"), message_request("a")],
        [{"custom_id": "a", "params": "x"}],
        [message_request("a", stream=True)],
    ],
)
async def test_invalid_message_batches(requests):
    app, _ = clocked_app()
    async with asgi_client(app) as client:
        r = await client.post("/v1/messages/batches", json={"requests": requests})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


async def test_message_batch_request_errors_are_errored_results():
    app, clock = clocked_app()
    async with asgi_client(app) as client:
        broken = {"custom_id": "no-max", "params": {"model": "claude-emu", "messages": []}}
        batch = (await client.post("/v1/messages/batches", json={"requests": [broken]})).json()
        clock.advance(5)
        [result] = read_jsonl((await client.get(f"/v1/messages/batches/{batch['id']}/results")).content)
        assert result["result"]["type"] == "errored"
        assert result["result"]["error"]["error"] == {
            "type": "invalid_request_error",
            "message": "max_tokens: Field required",
        }


# --- the official SDKs --------------------------------------------------------------------------


def test_openai_sdk_files_and_batches():
    app, clock = clocked_app()
    lines = [
        chat_line(f"s{i}", "gpt-emu@batch_items_per_s=4,batch_validating_ms=0,tokens=2") for i in range(8)
    ]
    with serve_app(app) as url, openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client:
        stored = client.files.create(file=("batch.jsonl", jsonl(lines)), purpose="batch")
        assert isinstance(stored, FileObject) and stored.purpose == "batch"
        batch = client.batches.create(
            input_file_id=stored.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert isinstance(batch, Batch) and batch.status == "in_progress"
        clock.advance(1.0)
        running = client.batches.retrieve(batch.id)
        assert running.request_counts is not None and running.request_counts.completed == 4
        clock.advance(2.0)
        done = client.batches.retrieve(batch.id)
        assert done.status == "completed" and done.output_file_id and done.usage is not None
        output = read_jsonl(client.files.content(done.output_file_id).read())
        assert [o["custom_id"] for o in output] == [f"s{i}" for i in range(8)]
        assert output[0]["response"]["body"]["choices"][0]["message"]["content"] == "tok0 tok1"
        other = client.batches.create(
            input_file_id=stored.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        clock.advance(0.5)
        cancelled = client.batches.cancel(other.id)
        assert cancelled.status == "cancelling" and cancelled.request_counts is not None
        assert [b.id for b in client.batches.list()] == [other.id, batch.id]
        with pytest.raises(openai.ConflictError):
            client.batches.cancel(batch.id)


def test_anthropic_sdk_message_batches():
    app, clock = clocked_app()
    requests = [
        message_request(f"a{i}", "claude-emu@batch_items_per_s=5,batch_seed=3,tokens=2") for i in range(10)
    ]
    with serve_app(app) as url, anthropic.Anthropic(base_url=url, api_key="x", max_retries=0) as client:
        batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]  # plain dicts
        assert isinstance(batch, MessageBatch) and batch.processing_status == "in_progress"
        clock.advance(1.0 + 0.1)
        running = client.messages.batches.retrieve(batch.id)
        assert running.request_counts.succeeded == 5 and running.request_counts.processing == 5
        clock.advance(5)
        ended = client.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended" and ended.results_url and ended.ended_at is not None
        results = list(client.messages.batches.results(batch.id))
        assert all(isinstance(r, MessageBatchIndividualResponse) for r in results)
        assert sorted(r.custom_id for r in results) == sorted(f"a{i}" for i in range(10))
        assert [r.custom_id for r in results] != [f"a{i}" for i in range(10)]
        first = results[0].result
        assert first.type == "succeeded" and first.message.content[0].type == "text"
        other = client.messages.batches.create(requests=requests[:3])  # type: ignore[arg-type]
        canceling = client.messages.batches.cancel(other.id)
        assert canceling.processing_status == "canceling"
        clock.advance(1)
        kinds = {r.result.type for r in client.messages.batches.results(other.id)}
        assert kinds == {"canceled"}
        assert [b.id for b in client.messages.batches.list()] == [other.id, batch.id]
        assert client.messages.batches.delete(batch.id).type == "message_batch_deleted"
        with pytest.raises(anthropic.NotFoundError):
            client.messages.batches.retrieve(batch.id)

"""Polling an asynchronous provider (README "Videos"): the schedule (interval, back-off while
nothing changes, the provider's ``Retry-After`` winning), the adapter reading the hint and a
429 / 503 from a poll, and the video call's loop following both."""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import formatdate
from typing import Any

import orjson
import pytest

from services.contracts.errors import ProviderError
from services.executor.polling import PollSchedule
from services.executor.providers.openai_video import OpenAIVideoAdapter, VideoJob
from services.executor.targets import Target
from services.executor.video import VideoCall, VideoRunner
from services.runtime.config import JobsConfig

TARGET = Target("demo-video", "emu", "openai", "http://provider/v1", "sora-2")


def test_no_progress_backs_off_to_the_cap_and_progress_resets_it():
    s = PollSchedule(interval_s=1.0, max_interval_s=4.0, backoff=1.5)
    waits = [s.after(progressed=False) for _ in range(6)]
    assert waits == [1.0, 1.5, 2.25, 3.375, 4.0, 4.0]
    assert s.after(progressed=True) == 1.0
    assert s.after(progressed=False) == 1.5


def test_the_providers_hint_wins_over_interval_and_cap():
    s = PollSchedule(interval_s=1.0, max_interval_s=4.0, backoff=2.0)
    assert s.after(progressed=True, retry_after_s=0.2) == 0.2  # sooner than the interval: as asked
    assert s.after(progressed=False, retry_after_s=9.0) == 9.0  # later than the cap: as asked
    assert s.after(progressed=False) == 4.0  # the back-off went on under the hints
    assert s.after(progressed=False, retry_after_s=-3) == 0.0


def test_the_schedule_comes_from_the_jobs_config():
    s = PollSchedule.of(JobsConfig(poll_interval_s=0.5, poll_max_interval_s=2, poll_backoff=2))
    assert [s.after(progressed=False) for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="poll_max_interval_s"):
        JobsConfig(poll_interval_s=5, poll_max_interval_s=1)


class HeadedHttp:
    """A transport answering queued GETs with (status, headers, body)."""

    def __init__(self, answers: list[tuple[int, dict[str, str], dict[str, Any]]]):
        self.answers = answers
        self.urls: list[str] = []

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: float | None) -> tuple[int, bytes]:
        status, _, body = await self.get_reply(url, headers, timeout_s)
        return status, body

    async def get_reply(
        self, url: str, headers: Mapping[str, str], timeout_s: float | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        self.urls.append(url)
        status, hdrs, body = self.answers.pop(0)
        return status, hdrs, orjson.dumps(body)

    async def post_json(self, *a: Any) -> tuple[int, bytes]:
        raise AssertionError("no POST while polling")

    def stream_lines(self, *a: Any) -> Any:
        raise AssertionError("no POST while polling")

    async def aclose(self) -> None:
        pass


def video(status: str, progress: int = 0) -> dict[str, Any]:
    return {"id": "video_1", "status": status, "progress": progress}


async def test_a_poll_reads_retry_after_in_seconds_or_as_an_http_date():
    http = HeadedHttp(
        [
            (200, {"Retry-After": "3"}, video("queued")),
            (200, {"retry-after": formatdate(2_000_000_000, usegmt=True)}, video("queued")),
            (200, {}, video("in_progress", 40)),
        ]
    )
    adapter = OpenAIVideoAdapter()
    first = await adapter.poll(http, "video_1", TARGET, None)
    assert first.retry_after_s == 3.0 and first.status == "queued"
    dated = await adapter.poll(http, "video_1", TARGET, None)
    assert dated.retry_after_s is not None and dated.retry_after_s > 3600  # a date far ahead
    plain = await adapter.poll(http, "video_1", TARGET, None)
    assert plain.retry_after_s is None and plain.progress == 0.4
    assert http.urls[0] == "http://provider/v1/videos/video_1"


@pytest.mark.parametrize("status", [429, 503])
async def test_a_busy_poll_is_an_error_carrying_the_wait(status):
    http = HeadedHttp([(status, {"retry-after": "2"}, {"error": {"message": "slow down"}})])
    with pytest.raises(ProviderError) as caught:
        await OpenAIVideoAdapter().poll(http, "video_1", TARGET, None)
    assert caught.value.details == {"upstream_status": status, "retry_after_ms": 2000.0}


class ScriptedAdapter:
    """Polls answered from a script: VideoJob, or an exception to raise."""

    def __init__(self, script: list[VideoJob | Exception]):
        self.script = script
        self.polls = 0

    async def poll(self, http: Any, job_id: str, target: Target, key: str | None) -> VideoJob:
        self.polls += 1
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def busy(status: int, ms: float | None) -> ProviderError:
    details: dict[str, Any] = {"upstream_status": status}
    if ms is not None:
        details["retry_after_ms"] = ms
    return ProviderError(f"HTTP {status}", details=details)


async def until_done(script: list[VideoJob | Exception], config: JobsConfig) -> tuple[list[float], VideoJob]:
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    runner = VideoRunner(
        http=None, secret=lambda _: None, publisher=None, topics=None, jobs=None, config=config, sleep=sleep
    )  # type: ignore[arg-type]
    call = VideoCall(runner, None)  # type: ignore[arg-type]
    job = await call._until_done(ScriptedAdapter(script), None, "video_1", TARGET, None)  # type: ignore[arg-type]
    return waits, job


async def test_the_loop_backs_off_while_queued_and_follows_hints_and_busy_answers():
    queued = VideoJob("video_1", "queued")
    config = JobsConfig(poll_interval_s=1, poll_max_interval_s=3, poll_backoff=2)
    waits, job = await until_done(
        [
            queued,  # first poll: the interval
            queued,  # no change: x2
            queued,  # no change: x2, capped at 3
            busy(429, 5000),  # refused with a hint: 5 s
            busy(503, None),  # refused without: the back-off (capped)
            VideoJob("video_1", "in_progress", retry_after_s=0.25),  # changed, and a hint: as asked
            VideoJob("video_1", "completed", progress=1.0),
        ],
        config,
    )
    assert waits == [1, 2, 3, 5, 3, 0.25] and job.status == "completed"


async def test_other_poll_errors_end_the_loop():
    with pytest.raises(ProviderError, match="HTTP 500"):
        await until_done([busy(500, 1000)], JobsConfig())

"""Running ``video.generate`` plans: an asynchronous provider behind any request.

The call submits the video to the provider, records the provider's job id on ``llm.jobs``
(``running``, ``provider_job``; acknowledged before polling starts), polls it on the
provider's hints (``Retry-After``, 429 / 503 waited out; else ``jobs.poll_interval_s``, backing
off to ``jobs.poll_max_interval_s`` while nothing changes: ``polling``), recording progress as
it changes, until the provider says
``completed`` — then downloads the video at once (the provider's copy expires) — or
``failed`` (the request fails, no retry, no fallback: the provider judged the prompt), all
within the request's deadline (``total_ms``; ``jobs.poll_deadline_s`` at most). A caller's
synchronous request waits for all of it and is answered once, as if the provider were
synchronous; a job request (``job: true``) ends its job with it.

Resumption: a plan run again after a restart finds its provider job on ``llm.jobs`` (the
executor's ``JobsView``) and polls it instead of submitting the video again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from services.contracts.errors import ProviderError
from services.contracts.events import ExecutionPlanned, Usage, VideoGenerateRequested, VideoOutput
from services.runtime.config import JobsConfig
from services.runtime.jobs import JobsView, job_key, job_state
from services.runtime.kafka import Publisher
from services.runtime.media.sniff import sniff
from services.runtime.topics import Topics

from .attempts import Final, Until
from .handlers import Outcome, QuietCall, SecretLookup
from .media_calls import media_ref
from .polling import PollSchedule
from .providers.openai_video import BUSY_STATUSES, DONE, FAILED, OpenAIVideoAdapter, VideoJob
from .providers.registry import adapter_for
from .providers.transport import HttpTransport
from .targets import Target
from .watch import Watched


class VideoRunner:
    def __init__(
        self,
        *,
        http: HttpTransport,
        secret: SecretLookup,
        publisher: Publisher,
        topics: Topics,
        jobs: JobsView,
        config: JobsConfig,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.http, self.secret, self.publisher, self.topics = http, secret, publisher, topics
        self.jobs, self.config = jobs, config
        self.sleep = sleep  # between polls (tests record the waits)

    def start(self, plan: ExecutionPlanned) -> VideoCall:
        assert isinstance(plan.request, VideoGenerateRequested)
        return VideoCall(self, plan)


class VideoCall(QuietCall):
    """The provider calls of one ``video.generate`` plan (``attempts.Call``)."""

    def __init__(self, runner: VideoRunner, plan: ExecutionPlanned):
        self._runner, self._plan = runner, plan

    def _resumed(self, target: Target) -> str | None:
        """The provider job this plan already submitted to ``target`` (a run before a restart)."""
        req = self._plan.request
        known = self._runner.jobs.peek(req.tenant_id, req.request_id)
        pj = known.provider_job if known is not None else None
        if pj and pj.get("deployment") == target.label and isinstance(pj.get("id"), str):
            return str(pj["id"])
        return None

    async def _record(self, target: Target, job: VideoJob) -> None:
        r, req = self._runner, self._plan.request
        state = job_state(req, "running").model_copy(
            update={"provider_job": {"deployment": target.label, "id": job.id}, "progress": job.progress}
        )
        await (await r.publisher.publish(r.topics.jobs.name, state, key=job_key(state)))

    async def __call__(self, target: Target, fallback_from: Target | None, until: Until) -> Outcome:
        r = self._runner
        adapter: OpenAIVideoAdapter = adapter_for(target.kind, "video.generate")
        req = self._plan.request
        assert isinstance(req, VideoGenerateRequested)
        key = r.secret(target.api_key_env)
        http = Watched(r.http)
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        cap = loop.time() + r.config.poll_deadline_s
        deadline = cap if until.at is None else min(until.at, cap)
        try:
            async with asyncio.timeout_at(deadline):
                job_id = self._resumed(target)
                if job_id is None:
                    submitted = await adapter.submit(http, req, target, key)
                    job_id = submitted.id
                    await self._record(target, submitted)
                job = await self._until_done(adapter, http, job_id, target, key)
                data = await adapter.download(http, job_id, target, key)
        except TimeoutError:
            raise until.timed_out(target, self._plan.total_ms) from None
        mime = sniff(data[:64]) or "video/mp4"
        seconds = job.seconds or req.seconds or "4"
        return Outcome(
            Usage(units={"video_seconds": float(seconds)}),
            target,
            job.model or target.upstream_model,
            provider_ms=(time.perf_counter() - t0) * 1000,
            output=VideoOutput(
                media=media_ref(data, mime, filename=f"{job_id}.mp4"),
                seconds=seconds,
                size=job.size or req.size,
                provider_id=job_id,
            ),
        )

    async def _until_done(
        self, adapter: OpenAIVideoAdapter, http: HttpTransport, job_id: str, target: Target, key: str | None
    ) -> VideoJob:
        """Poll until the provider's job ends, on the provider's hints (``polling.PollSchedule``):
        a 429 / 503 answer is waited out and polled again, not an attempt's failure."""
        schedule = PollSchedule.of(self._runner.config)
        seen: float | None = None
        last: tuple[str, float | None] | None = None
        while True:
            try:
                job = await adapter.poll(http, job_id, target, key)
            except ProviderError as err:
                if err.details.get("upstream_status") not in BUSY_STATUSES:
                    raise
                hint = err.details.get("retry_after_ms")
                await self._runner.sleep(schedule.after(progressed=False, retry_after_s=_seconds(hint)))
                continue
            if job.status == DONE:
                return job
            if job.status == FAILED:  # the provider's verdict on this video: no other attempt
                raise Final(
                    ProviderError(
                        f"{target.provider}: video job {job_id} failed: {job.error or 'no reason given'}",
                        details={"upstream_status": None, "provider_job": job_id},
                    )
                )
            if job.progress is not None and job.progress != seen:
                seen = job.progress
                await self._record(target, job)
            now = (job.status, job.progress)
            progressed, last = now != last, now
            await self._runner.sleep(schedule.after(progressed=progressed, retry_after_s=job.retry_after_s))


def _seconds(ms: object) -> float | None:
    return float(ms) / 1000 if isinstance(ms, int | float) else None

"""OpenAI's videos API, emulated: an asynchronous provider that makes a real (small) MP4.

``POST /v1/videos`` (JSON or multipart: ``model``, default ``sora-2``; ``prompt``, 1..32000
characters, required; ``seconds`` ``"4"`` (default), ``"8"`` or ``"12"``; ``size``
``720x1280`` (default), ``1280x720``, ``1024x1792`` or ``1792x1024``; ``input_reference``, a
file or ``{"image_url" | "file_id"}``, accepted and not used) answers the video job, ``queued``
with ``progress`` 0. ``GET /v1/videos/{id}`` recomputes it from the app's clock (no background
work; see :func:`.job_scenario.clock`):

* ``queued`` for ``video_queue_ms``, then ``in_progress`` for ``seconds * video_ms`` with
  ``progress`` rising linearly 0..99, then ``completed`` (``progress`` 100, ``completed_at``,
  ``expires_at`` = ``completed_at + video_expire_s``);
* with ``video_fail_at=P``: ``failed`` once progress reaches P (``progress`` stays P,
  ``completed_at`` set, ``error: {"code": "video_generation_failed", "message"}``).

``GET /v1/videos/{id}/content[?variant=video|thumbnail|spritesheet]`` of a completed video is
its MP4 (``video/mp4``; see :mod:`.video_synth`, :mod:`.mp4`), a WebP thumbnail or a JPEG
spritesheet; before completion, after a failure, and once ``expires_at`` passed it is a 404, so a
gateway must keep its own copy in time. ``DELETE /v1/videos/{id}`` (completed or failed jobs
only; else 400) answers ``{"id", "object": "video.deleted", "deleted": true}``, after which the
id is a 404. ``GET /v1/videos`` lists jobs (``limit`` 0..100, default 20; ``order`` ``desc``
(default) or ``asc`` by creation; ``after`` a video id). ``POST /v1/videos/{id}/remix``
(``{"prompt"}``) of a completed video starts a new job with ``remixed_from_video_id``, the
source's model, seconds, size and scenario.

Scenario: the model name / ``x-emulator-scenario`` header / ``emulator_scenario`` field may hold
the video keys of :mod:`.job_scenario` and the per-request keys of :mod:`.scenario`, which
apply to the create call itself (``status``, ``fail_first``, ``hang``, ``ttfb_ms``,
``retry_after_ms``; ``disconnect_after`` drops it). The response's ``model`` is the bare name.
Each create is logged for ``GET /_emulator/calls`` as kind ``videos`` (inputs: the prompt);
each poll of a job is counted, and ``GET /_emulator/videos/{id}`` answers ``{"id", "polls",
"at"}`` (the app clock's time of every poll). ``video_retry_after_s`` puts ``Retry-After`` on
the polls; ``video_poll_busy=N`` answers the first N polls 429.
State is per app (``app.state.videos``, the last :data:`VIDEOS_KEPT` jobs). Errors are
OpenAI's ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import text, video_synth
from .common import GONE, BadRequest, Drop, Silent, answered, json_response, preflight, read_json, record_call
from .common import scenario_spec as merged_spec
from .cursor_page import page
from .job_scenario import JobScenario, app_store, clock, split
from .openai_api import error, scenario_error
from .scenario import ScenarioError, resolve

VIDEOS_KEPT = 10_000
SECONDS = ("4", "8", "12")
SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024")
DEFAULT_MODEL = "sora-2"
MAX_PROMPT = 32_000
#: A microsecond of slack so a clock landing exactly on a transition (up to float error) counts as past it.
_EPSILON = 1e-6
FAILURE = {
    "code": "video_generation_failed",
    "message": "The emulator failed this video generation (scenario video_fail_at).",
}


@dataclass
class VideoJob:
    """One video job; its status is a function of the clock (:meth:`view`)."""

    id: str
    model: str
    prompt: str
    seconds: int
    size: str
    job: JobScenario
    started: float
    created_at: float
    remixed_from: str | None = None
    #: clock times of this job's polls (``GET /v1/videos/{id}``), busy ones included
    polls: list[float] = field(default_factory=list)

    @property
    def run_s(self) -> float:
        return self.seconds * self.job.video_ms / 1000

    @property
    def queue_s(self) -> float:
        return self.job.video_queue_ms / 1000

    def _unix(self, at: float) -> int:
        return int(self.created_at + (at - self.started))

    def state(self, now: float) -> tuple[str, int, float | None]:
        """(status, progress, clock time it finished or None) at clock time ``now``."""
        elapsed = now - self.started + _EPSILON
        if elapsed < self.queue_s:
            return "queued", 0, None
        done = (elapsed - self.queue_s) / self.run_s if self.run_s > 0 else 1.0
        progress = min(100, math.floor(100 * done))
        fail_at = self.job.video_fail_at
        if fail_at is not None and progress >= fail_at:
            return "failed", fail_at, self.started + self.queue_s + self.run_s * fail_at / 100
        if done >= 1:
            return "completed", 100, self.started + self.queue_s + self.run_s
        return "in_progress", progress, None

    def expired(self, now: float) -> bool:
        status, _, finished = self.state(now)
        return status != "completed" or finished is None or now >= finished + self.job.video_expire_s

    def view(self, now: float) -> dict[str, Any]:
        """The ``VideoResource`` at clock time ``now``."""
        status, progress, finished = self.state(now)
        completed_at = None if finished is None else self._unix(finished)
        expires_at = None
        if status == "completed" and completed_at is not None:
            expires_at = int(completed_at + self.job.video_expire_s)
        return {
            "id": self.id,
            "object": "video",
            "model": self.model,
            "status": status,
            "progress": progress,
            "created_at": int(self.created_at),
            "completed_at": completed_at,
            "expires_at": expires_at,
            "prompt": self.prompt,
            "size": self.size,
            "seconds": str(self.seconds),
            "remixed_from_video_id": self.remixed_from,
            "error": dict(FAILURE) if status == "failed" else None,
        }


def _jobs(request: Request) -> OrderedDict[str, VideoJob]:
    jobs: OrderedDict[str, VideoJob] = app_store(request, "videos", OrderedDict)
    return jobs


def _keep(request: Request, job: VideoJob) -> None:
    jobs = _jobs(request)
    jobs[job.id] = job
    while len(jobs) > VIDEOS_KEPT:
        jobs.popitem(last=False)


async def _fields(request: Request) -> dict[str, Any]:
    """The create body as a dict, from JSON or a multipart form (files kept as ``UploadFile``)."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        try:
            form: FormData = await request.form(max_files=4, max_fields=64)
        except Exception as exc:  # starlette raises several kinds for a malformed form
            raise BadRequest(f"Could not parse the multipart form: {exc}") from None
        return {key: form.get(key) for key in form}
    return await read_json(request)


def _text_field(body: dict[str, Any], key: str, default: str | None) -> str | None:
    value = body.get(key, default)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BadRequest(f"Invalid type for '{key}': expected a string.", param=key)


def _prompt(body: dict[str, Any]) -> str:
    prompt = _text_field(body, "prompt", None)
    if not prompt:
        raise BadRequest("Missing required parameter: 'prompt'.", param="prompt")
    if len(prompt) > MAX_PROMPT:
        raise BadRequest(
            f"Invalid 'prompt': string too long. Expected a string with maximum length {MAX_PROMPT}, "
            f"but got a string with length {len(prompt)} instead.",
            param="prompt",
        )
    return prompt


def _enum(body: dict[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = _text_field(body, key, default) or default
    if value not in allowed:
        listed = ", ".join(f"'{v}'" for v in allowed)
        raise BadRequest(f"Invalid value: '{value}'. Supported values are: {listed}.", param=key)
    return value


def _check_reference(value: Any) -> None:
    if value is None or isinstance(value, UploadFile | str):
        return
    if not isinstance(value, dict) or len({"image_url", "file_id"} & value.keys()) != 1:
        raise BadRequest(
            "Invalid 'input_reference': provide exactly one of 'image_url' or 'file_id'.",
            param="input_reference",
        )


def _not_found(video_id: str) -> Response:
    return error(404, f"Video with id '{video_id}' not found.", param="video_id", code="not_found")


async def create(request: Request) -> Response:
    """``POST /v1/videos``: a new job, ``queued``."""
    try:
        body = await _fields(request)
        model = _text_field(body, "model", DEFAULT_MODEL) or DEFAULT_MODEL
        prompt = _prompt(body)
        seconds = int(_enum(body, "seconds", SECONDS, "4"))
        size = _enum(body, "size", SIZES, SIZES[0])
        _check_reference(body.get("input_reference"))
        spec = merged_spec(request, body)
        rest_model, job, rest_header = split(model, spec)
        name, scenario = resolve(rest_model, rest_header)
    except BadRequest as exc:
        return error(400, exc.message, param=exc.param)
    except ScenarioError as exc:
        return error(400, str(exc), param="model")
    entry = record_call(request, "videos", name, [prompt])
    outcome = await preflight(request, scenario)
    if outcome is not None:
        return answered(entry, Silent() if outcome == GONE else scenario_error(outcome, scenario))
    if scenario.disconnect_after is not None:
        return answered(entry, Drop())
    now = clock(request)
    video = VideoJob(text.new_id("video_"), name, prompt, seconds, size, job, now, time.time())
    _keep(request, video)
    return answered(entry, json_response(video.view(now)))


def _hint(job: JobScenario) -> dict[str, str]:
    """The ``Retry-After`` header of a poll, when the scenario asks for one."""
    seconds = job.video_retry_after_s
    if seconds is None:
        return {}
    if job.video_retry_after_date:
        return {"retry-after": formatdate(time.time() + math.ceil(seconds), usegmt=True)}
    return {"retry-after": str(int(seconds)) if seconds == int(seconds) else str(seconds)}


async def retrieve(request: Request) -> Response:
    """``GET /v1/videos/{id}``: the job now (a poll: counted, see ``/_emulator/videos/{id}``)."""
    video = _jobs(request).get(request.path_params["video_id"])
    if video is None:
        return _not_found(request.path_params["video_id"])
    now = clock(request)
    video.polls.append(now)
    headers = _hint(video.job)
    if len(video.polls) <= video.job.video_poll_busy:
        return error(429, "Too many polls of this video (scenario video_poll_busy).", headers=headers)
    return json_response(video.view(now), headers=headers or None)


async def polls(request: Request) -> Response:
    """``GET /_emulator/videos/{id}``: ``{"id", "polls": n, "at": [clock times]}`` of its polls."""
    video = _jobs(request).get(request.path_params["video_id"])
    if video is None:
        return _not_found(request.path_params["video_id"])
    return json_response({"id": video.id, "polls": len(video.polls), "at": video.polls})


async def content(request: Request) -> Response:
    """``GET /v1/videos/{id}/content``: the bytes of a completed, unexpired video."""
    video_id = request.path_params["video_id"]
    video = _jobs(request).get(video_id)
    if video is None:
        return _not_found(video_id)
    variant = request.query_params.get("variant", "video")
    if variant not in video_synth.MIME:
        listed = ", ".join(f"'{v}'" for v in video_synth.MIME)
        return error(400, f"Invalid value: '{variant}'. Supported values are: {listed}.", param="variant")
    now = clock(request)
    status = video.state(now)[0]
    if status != "completed":
        return error(404, f"Video '{video_id}' is {status}: it has no content.", code="video_not_ready")
    if video.expired(now):
        return error(404, f"The content of video '{video_id}' has expired.", code="video_expired")
    width, height = (int(side) for side in video.size.split("x"))
    data = video_synth.content(video.prompt, video.seconds, width, height, variant)
    return Response(data, media_type=video_synth.MIME[variant])


async def delete(request: Request) -> Response:
    video_id = request.path_params["video_id"]
    jobs = _jobs(request)
    video = jobs.get(video_id)
    if video is None:
        return _not_found(video_id)
    status = video.state(clock(request))[0]
    if status not in ("completed", "failed"):
        return error(400, f"Video '{video_id}' is {status}: only completed or failed videos can be deleted.")
    del jobs[video_id]
    return json_response({"id": video_id, "object": "video.deleted", "deleted": True})


async def remix(request: Request) -> Response:
    video_id = request.path_params["video_id"]
    source = _jobs(request).get(video_id)
    if source is None:
        return _not_found(video_id)
    try:
        prompt = _prompt(await read_json(request))
    except BadRequest as exc:
        return error(400, exc.message, param=exc.param)
    now = clock(request)
    if source.state(now)[0] != "completed":
        return error(400, f"Video '{video_id}' is not completed: only completed videos can be remixed.")
    record_call(request, "videos", source.model, [prompt])["status"] = 200
    video = VideoJob(
        text.new_id("video_"),
        source.model,
        prompt,
        source.seconds,
        source.size,
        source.job,
        now,
        time.time(),
        remixed_from=video_id,
    )
    _keep(request, video)
    return json_response(video.view(now))


async def list_videos(request: Request) -> Response:
    now = clock(request)
    newest_first = [video.view(now) for video in reversed(_jobs(request).values())]
    try:
        return json_response(page(newest_first, request.query_params, default_limit=20, max_limit=100))
    except BadRequest as exc:
        return error(400, exc.message, param=exc.param)


def routes() -> list[Route]:
    return [
        Route("/v1/videos", create, methods=["POST"]),
        Route("/v1/videos", list_videos, methods=["GET"]),
        Route("/v1/videos/{video_id}", retrieve, methods=["GET"]),
        Route("/v1/videos/{video_id}", delete, methods=["DELETE"]),
        Route("/v1/videos/{video_id}/content", content, methods=["GET"]),
        Route("/v1/videos/{video_id}/remix", remix, methods=["POST"]),
        Route("/_emulator/videos/{video_id}", polls, methods=["GET"]),
    ]

"""Scenario keys of the emulator's asynchronous APIs (videos, batches), apart from :mod:`.scenario`.

They ride in the same places as the per-request keys (the model name ``NAME@key=value,...``
and the ``x-emulator-scenario`` header, the header winning) and may be mixed with them:
:func:`split` takes these keys out and hands back the rest, which :func:`.scenario.resolve`
then checks as usual (so an unknown key is still an error naming it). Times are wall-clock
times of the app's clock (``app.state.clock``, see :func:`clock`).

Video keys (``POST /v1/videos``, see :mod:`.videos_api`):

``video_ms``         milliseconds of generation per second of video (float, default 250: a
                     4-second clip takes one second after leaving the queue)
``video_queue_ms``   time a job stays ``queued`` before ``in_progress`` (float, default 100)
``video_fail_at``    0..100: the job fails once its progress reaches this percentage
                     (default: it does not fail)
``video_expire_s``   seconds the finished video stays downloadable (float, default 3600); after
                     that ``/content`` answers 404 (``expires_at`` says when)
``video_retry_after_s``  every poll (``GET /v1/videos/{id}``) carries ``Retry-After`` with this
                     many seconds (float; an integer is sent without a fraction)
``video_retry_after_date``  1 = that ``Retry-After`` is an HTTP date (whole seconds, rounded up)
``video_poll_busy``  the first N polls of the job answer 429 (``rate_limit_exceeded``), with
                     the ``Retry-After`` of ``video_retry_after_s`` when set (integer, default 0)

Batch keys (OpenAI ``/v1/batches``, Anthropic ``/v1/messages/batches``; see :mod:`.batch_clock`).
A batch takes them from its first request's model name, then from that request's
``emulator_scenario`` body field (what a gateway passes through from a caller, as for single
calls), then from the ``x-emulator-scenario`` header of the create call (each later one wins); each request's own model name, without these
keys, is that request's scenario:

``batch_items_per_s``    requests finished per second once the batch runs (float > 0, default 100)
``batch_validating_ms``  time in ``validating`` before ``in_progress`` (float, default 100)
``batch_finalizing_ms``  time in ``finalizing`` before ``completed`` (float, default 100)
``batch_cancel_ms``      time in ``cancelling`` before ``cancelled`` (float, default 100)
``batch_window_s``       the completion window in seconds (float, default 86400, the real
                         ``24h``); a batch not done by then expires
``batch_fail``           1 = OpenAI: the batch fails validation (``failed``, one error)
``batch_seed``           Anthropic: seed of the (deterministic) order of the results file
                         (integer, default 0)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request

from .scenario import ScenarioError, split_model


@dataclass(frozen=True, slots=True)
class JobScenario:
    """What an emulated asynchronous job does over time (see the module docstring)."""

    video_ms: float = 250.0
    video_queue_ms: float = 100.0
    video_fail_at: int | None = None
    video_expire_s: float = 3600.0
    video_retry_after_s: float | None = None
    video_retry_after_date: bool = False
    video_poll_busy: int = 0
    batch_items_per_s: float = 100.0
    batch_validating_ms: float = 100.0
    batch_finalizing_ms: float = 100.0
    batch_cancel_ms: float = 100.0
    batch_window_s: float = 86_400.0
    batch_fail: bool = False
    batch_seed: int = 0


def _number(key: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ScenarioError(f"emulator scenario key '{key}' needs a number, got {raw!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ScenarioError(f"emulator scenario key '{key}' must be a finite number >= 0, got {raw!r}")
    return value


def _rate(key: str, raw: str) -> float:
    value = _number(key, raw)
    if value <= 0:
        raise ScenarioError(f"emulator scenario key '{key}' must be > 0, got {raw!r}")
    return value


def _integer(key: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ScenarioError(f"emulator scenario key '{key}' needs an integer, got {raw!r}") from None


def _count(key: str, raw: str) -> int:
    value = _integer(key, raw)
    if value < 0:
        raise ScenarioError(f"emulator scenario key '{key}' must be >= 0, got {raw!r}")
    return value


def _percent(key: str, raw: str) -> int:
    value = _integer(key, raw)
    if not 0 <= value <= 100:
        raise ScenarioError(f"emulator scenario key '{key}' must be 0..100, got {raw!r}")
    return value


def _flag(key: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on", ""):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ScenarioError(f"emulator scenario key '{key}' needs 0 or 1, got {raw!r}")


_CONVERTERS: dict[str, Callable[[str, str], Any]] = {
    "video_ms": _number,
    "video_queue_ms": _number,
    "video_fail_at": _percent,
    "video_expire_s": _number,
    "video_retry_after_s": _number,
    "video_retry_after_date": _flag,
    "video_poll_busy": _count,
    "batch_items_per_s": _rate,
    "batch_validating_ms": _number,
    "batch_finalizing_ms": _number,
    "batch_cancel_ms": _number,
    "batch_window_s": _number,
    "batch_fail": _flag,
    "batch_seed": _integer,
}

KEYS = frozenset(_CONVERTERS)
#: Every job key starts with one of these; an unknown key that does is an error here.
PREFIXES = ("video_", "batch_")


def take(spec: str | None) -> tuple[dict[str, Any], str]:
    """Split a ``key=value,...`` string into (converted job keys, the other items re-joined).

    An unknown key starting with ``video_`` or ``batch_`` is a :class:`ScenarioError`."""
    mine: dict[str, Any] = {}
    rest: list[str] = []
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, _, value = item.partition("=")
        key = key.strip()
        if key in _CONVERTERS:
            mine[key] = _CONVERTERS[key](key, value.strip())
        elif key.startswith(PREFIXES):
            known = ", ".join(sorted(_CONVERTERS))
            raise ScenarioError(f"unknown emulator scenario key '{key}' (known job keys: {known})")
        else:
            rest.append(item)
    return mine, ",".join(rest)


def split(model: str, header: str | None = None) -> tuple[str, JobScenario, str | None]:
    """``("sora-emu@video_ms=9,ttfb_ms=5", None)`` -> ``("sora-emu@ttfb_ms=5", JobScenario(video_ms=9),
    None)``: the model without the job keys, the job scenario (header keys win), and the header
    without them (``None`` when nothing is left). Raises :class:`ScenarioError`."""
    name, spec = split_model(model)
    from_model, rest_model = take(spec)
    from_header, rest_header = take(header)
    job = replace(JobScenario(), **{**from_model, **from_header})
    return (f"{name}@{rest_model}" if rest_model else name), job, rest_header or None


def batch_header(first_body: Any, header: str | None) -> str | None:
    """The batch keys' spec besides the model name: the first request's ``emulator_scenario``
    body field, then the create call's header (which wins: it comes last)."""
    field = first_body.get("emulator_scenario") if isinstance(first_body, dict) else None
    if isinstance(field, str) and field:
        return f"{field},{header}" if header else field
    return header


def strip_model(model: str) -> str:
    """``model`` without the job keys (what a batch's request is answered as)."""
    name, spec = split_model(model)
    rest = take(spec)[1]
    return f"{name}@{rest}" if rest else name


def clock(request: Request) -> float:
    """Seconds on the app's clock: ``app.state.clock()`` (tests set it), else ``time.monotonic()``."""
    tick: Callable[[], float] = getattr(request.app.state, "clock", time.monotonic)
    return tick()


def app_store(request: Request, name: str, factory: Callable[[], Any]) -> Any:
    """The per-app object ``app.state.<name>``, made by ``factory`` on first use."""
    state = request.app.state
    value = getattr(state, name, None)
    if value is None:
        value = factory()
        setattr(state, name, value)
    return value

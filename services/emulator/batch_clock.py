"""The state of an emulated batch as a pure function of the clock (OpenAI's status names).

A batch of ``total`` requests created at clock time ``t0`` (seconds, the app's clock) with the
batch keys of :mod:`.job_scenario`:

* ``validating`` until ``v = t0 + batch_validating_ms``; a batch that fails validation is then
  ``failed`` (no request runs);
* ``in_progress``: request *k* (0-based) finishes at ``v + (k + 1) / batch_items_per_s``;
* ``finalizing`` from the last request's finish ``d`` for ``batch_finalizing_ms``, then
  ``completed``;
* ``expired`` at ``t0 + batch_window_s`` if ``d`` comes later: requests not finished by then
  never run;
* a cancel at clock time ``c`` (only while ``validating`` or ``in_progress``) stops every request
  not finished by ``c``: ``cancelling`` until ``c + batch_cancel_ms``, then ``cancelled``.

:meth:`Timeline.at` answers the status, how many requests finished (in order: the first
``finished`` requests, never more later on), and the clock times of the transitions reached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .job_scenario import JobScenario

TERMINAL = ("failed", "completed", "expired", "cancelled")
CANCELLABLE = ("validating", "in_progress")


@dataclass(frozen=True, slots=True)
class Phase:
    """What a batch is at one instant (see :meth:`Timeline.at`)."""

    status: str
    finished: int
    times: dict[str, float] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True, slots=True)
class Timeline:
    """When a batch's transitions happen; ``cancel_at`` is set by a cancel, ``invalid`` by validation."""

    started: float
    total: int
    job: JobScenario
    invalid: bool = False
    cancel_at: float | None = None

    @property
    def validated(self) -> float:
        return self.started + self.job.batch_validating_ms / 1000

    @property
    def done(self) -> float:
        return self.validated + self.total / self.job.batch_items_per_s

    @property
    def window_end(self) -> float:
        return self.started + self.job.batch_window_s

    def finished_by(self, when: float) -> int:
        """Requests finished by clock time ``when`` (ignoring cancels and the window)."""
        if self.invalid or when < self.validated:
            return 0
        # a small tolerance keeps ``when == finish time of k`` counting k despite float error
        count = math.floor((when - self.validated) * self.job.batch_items_per_s + 1e-9)
        return max(0, min(self.total, count))

    def at(self, now: float) -> Phase:
        """The batch's phase at clock time ``now`` (>= ``started``)."""
        times: dict[str, float] = {}
        if self.cancel_at is not None:
            return self._cancelled(now, self.cancel_at, times)
        if self.invalid:
            if now < self.validated:
                return Phase("validating", 0, times)
            times["failed_at"] = self.validated
            return Phase("failed", 0, times)
        if now >= self.window_end and self.done > self.window_end:
            if self.window_end >= self.validated:
                times["in_progress_at"] = self.validated
            times["expired_at"] = self.window_end
            return Phase("expired", self.finished_by(self.window_end), times)
        if now < self.validated:
            return Phase("validating", 0, times)
        times["in_progress_at"] = self.validated
        if now < self.done:
            return Phase("in_progress", self.finished_by(now), times)
        times["finalizing_at"] = self.done
        finalized = self.done + self.job.batch_finalizing_ms / 1000
        if now < finalized:
            return Phase("finalizing", self.total, times)
        times["completed_at"] = finalized
        return Phase("completed", self.total, times)

    def _cancelled(self, now: float, cancel_at: float, times: dict[str, float]) -> Phase:
        if cancel_at >= self.validated and not self.invalid:
            times["in_progress_at"] = self.validated
        times["cancelling_at"] = cancel_at
        finished = self.finished_by(cancel_at)
        ends = cancel_at + self.job.batch_cancel_ms / 1000
        if now < ends:
            return Phase("cancelling", finished, times)
        times["cancelled_at"] = ends
        return Phase("cancelled", finished, times)

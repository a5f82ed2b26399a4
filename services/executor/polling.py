"""When to poll an asynchronous provider's job next (``jobs.poll_*``; README "Videos").

``PollSchedule.after(...)`` is the wait before the next poll, from what the last poll said:

* the provider's hint wins: ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms`` on
  the poll's answer, a 429 / 503 refusal included, is waited as asked (the request's deadline
  still bounds the whole job);
* otherwise a poll that saw progress (the status or the progress changed) waits
  ``poll_interval_s``, and each poll that saw none waits ``poll_backoff`` times longer than the
  one before, up to ``poll_max_interval_s``.

Pure: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.runtime.config import JobsConfig


@dataclass
class PollSchedule:
    interval_s: float
    max_interval_s: float
    backoff: float = 1.5
    _wait_s: float | None = field(default=None, init=False)  # the last wait without a hint

    @classmethod
    def of(cls, config: JobsConfig) -> PollSchedule:
        return cls(config.poll_interval_s, config.poll_max_interval_s, config.poll_backoff)

    def after(self, *, progressed: bool, retry_after_s: float | None = None) -> float:
        """Seconds to wait before the next poll (see the module docstring)."""
        if progressed or self._wait_s is None:
            self._wait_s = self.interval_s
        else:
            self._wait_s = min(self._wait_s * self.backoff, self.max_interval_s)
        if retry_after_s is not None:
            return max(retry_after_s, 0.0)
        return self._wait_s

"""What the executor tells its metrics and traces about a plan's run.

* ``record``: one executed request's metrics, from its usage record and its ``Attempts`` (retries
  on one deployment, deployments given up), when the outcome is published (``outcome.py``).
* ``traced``: the plan's provider calls, each in a client span ``{operation} {upstream model}``
  with the GenAI attributes of the request sent and the answer got (while tracing records;
  otherwise the call itself is returned, at no cost).
"""

from __future__ import annotations

from opentelemetry.trace import SpanKind

from services.contracts.events import ExecutionPlanned, UsageRecorded
from services.runtime import genai, metrics, telemetry

from .attempts import Attempts, Call, Until
from .handlers import Outcome
from .targets import Target


def record(usage: UsageRecorded, attempts: Attempts) -> None:
    """The request's count, tokens, cost and timings; its retries and fallbacks."""
    if not metrics.enabled:
        return
    metrics.executed(usage)
    calls = attempts.calls
    for prev, cur in zip(calls, calls[1:], strict=False):
        if cur.index == prev.index and not cur.skipped:
            metrics.retried(cur.target.alias, cur.target.provider)
    for failed, _ in attempts.fallbacks():
        if failed.error is not None:
            metrics.fell_back(failed.target.alias, failed.target.provider, failed.error.code)


def traced(plan: ExecutionPlanned, call: Call[Outcome]) -> Call[Outcome]:
    """``call`` with a span around each provider call (``call`` itself when not recording)."""
    if not telemetry.recording():
        return call
    req = plan.request
    conv = telemetry.conventions
    text_only = genai.text_only(req)
    attempt = 0

    async def each(target: Target, fallback_from: Target | None, until: Until) -> Outcome:
        nonlocal attempt
        attempt += 1
        attrs = genai.request_attributes(
            req, target.upstream_model, conv, provider_kind=target.kind, base_url=target.base_url
        )
        attrs["llmgw.deployment"] = target.label
        attrs["llmgw.attempt"] = attempt
        span = telemetry.start(genai.span_name(req.operation, target.upstream_model), SpanKind.CLIENT, attrs)
        with telemetry.active(span, end=True):
            outcome = await call(target, fallback_from, until)
            span.set_attributes(
                genai.response_attributes(
                    conv,
                    model=outcome.model,
                    usage=outcome.usage,
                    finish_reason=outcome.finish_reason,
                    ttft_ms=outcome.ttft_ms if req.stream else None,
                    text_only=text_only,
                )
            )
            if conv.content and outcome.message is not None:
                span.set_attribute(
                    genai.OUTPUT_MESSAGES, genai.output_messages(outcome.message, outcome.finish_reason)
                )
            if outcome.error is not None:  # answered, and the answer refused (schema, hook)
                telemetry.failed(span, outcome.error)
            return outcome

    return each

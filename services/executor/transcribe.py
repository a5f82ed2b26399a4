"""Running ``audio.transcribe`` plans: one provider call per attempt with the audio's bytes (the
executor has filled ``req.file.media.data``), its answer as ``TranscriptionOutput``: the text,
the body in the asked format, the language and duration when known.

Attempts, retries and fallback are ``attempts.py``'s. A deployment whose provider kind cannot
transcribe is ``capability_not_supported`` before any HTTP, and the next one is tried.
"""

from __future__ import annotations

from services.contracts.events import ExecutionPlanned, TranscribeRequested, TranscriptionOutput

from .attempts import Until
from .handlers import Outcome, SecretLookup
from .media_calls import QuietCall, whole_call
from .providers.media_base import TranscribeAdapter
from .providers.registry import adapter_for
from .providers.transport import HttpTransport
from .targets import Target


class TranscribeRunner:
    def __init__(self, *, http: HttpTransport, secret: SecretLookup):
        self.http = http
        self.secret = secret

    def start(self, plan: ExecutionPlanned) -> TranscribeCall:
        assert isinstance(plan.request, TranscribeRequested)
        return TranscribeCall(self, plan)


class TranscribeCall(QuietCall):
    """The provider calls of one ``audio.transcribe`` plan (``attempts.Call``). The request is
    read from the plan at each call: the executor fills its media's bytes after ``start``."""

    def __init__(self, runner: TranscribeRunner, plan: ExecutionPlanned):
        self._runner, self._plan = runner, plan

    async def __call__(self, target: Target, fallback_from: Target | None, until: Until) -> Outcome:
        adapter: TranscribeAdapter = adapter_for(target.kind, "audio.transcribe")
        req = self._plan.request
        assert isinstance(req, TranscribeRequested)
        key = self._runner.secret(target.api_key_env)
        done, ms = await whole_call(
            self._plan,
            target,
            self._runner.http,
            lambda http: adapter.transcribe(http, req, target, key),
            until,
        )
        output = TranscriptionOutput(
            text=done.text,
            format=done.format,
            body=done.body,
            language=done.language,
            duration_s=done.duration_s,
        )
        return Outcome(
            done.usage,
            target,
            done.model or target.upstream_model,
            provider_ms=ms,
            ttft_ms=ms,
            output=output,
        )

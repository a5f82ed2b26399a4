"""Running ``image.generate`` plans: one provider call per attempt, the images it made as
``MediaRef``s with their bytes inline (``ImagesOutput``).

Attempts, retries and fallback are ``attempts.py``'s; the executor stages large bytes and sends
the output to the media-store (``llm.media.out``). A deployment whose provider kind cannot
generate images is ``capability_not_supported`` before any HTTP, and the next one is tried.
"""

from __future__ import annotations

from services.contracts.events import ExecutionPlanned, GeneratedImage, ImageGenerateRequested, ImagesOutput

from .attempts import Until
from .handlers import Outcome, SecretLookup
from .media_calls import QuietCall, media_ref, whole_call
from .providers.media_base import ImagesAdapter, Pictures
from .providers.registry import adapter_for
from .providers.transport import HttpTransport
from .targets import Target

#: File name extensions of the image types providers answer.
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


class ImagesRunner:
    def __init__(self, *, http: HttpTransport, secret: SecretLookup):
        self.http = http
        self.secret = secret

    def start(self, plan: ExecutionPlanned) -> ImagesCall:
        assert isinstance(plan.request, ImageGenerateRequested)
        return ImagesCall(self, plan)


def images_output(done: Pictures) -> ImagesOutput:
    """The provider's images, in its order, each a new ``MediaRef`` holding its bytes."""
    return ImagesOutput(
        created=done.created,
        data=[
            GeneratedImage(
                media=media_ref(p.data, p.mime_type, f"image-{i}.{EXTENSIONS.get(p.mime_type, 'bin')}"),
                revised_prompt=p.revised_prompt,
            )
            for i, p in enumerate(done.images)
        ],
        output_format=done.output_format,
        size=done.size,
        quality=done.quality,
    )


class ImagesCall(QuietCall):
    """The provider calls of one ``image.generate`` plan (``attempts.Call``)."""

    def __init__(self, runner: ImagesRunner, plan: ExecutionPlanned):
        self._runner, self._plan = runner, plan

    async def __call__(self, target: Target, fallback_from: Target | None, until: Until) -> Outcome:
        adapter: ImagesAdapter = adapter_for(target.kind, "image.generate")
        req = self._plan.request
        assert isinstance(req, ImageGenerateRequested)
        key = self._runner.secret(target.api_key_env)
        done, ms = await whole_call(
            self._plan,
            target,
            self._runner.http,
            lambda http: adapter.generate(http, req, target, key),
            until,
        )
        return Outcome(
            done.usage,
            target,
            done.model or target.upstream_model,
            provider_ms=ms,
            ttft_ms=ms,
            output=images_output(done),
        )

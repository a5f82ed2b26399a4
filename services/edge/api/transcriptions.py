"""``POST /v1/audio/transcriptions``: OpenAI's transcriptions API over the event pipeline.

OpenAI's body is ``multipart/form-data``: ``file`` (an upload), ``model``, ``language``,
``prompt``, ``response_format``, ``timestamp_granularities[]``, ``temperature``. The upload is
streamed into FileStorage as one of the tenant's files (``tenants/<tenant>/files/<file id>``,
purpose ``user_data``, at most ``media.max_bytes``, never held whole) and the
``TranscribeRequested`` names its file id. The upload lives as long as its request: it is deleted
once the answer is there (or the request failed, was refused, or its client left). Gateway extension: ``file`` may instead be a reference (an ``https:`` or ``data:`` URL,
an ``s3://`` reference, a file id) in a text field of the form, in a urlencoded form, or in a
JSON body (``"file": "<reference>"`` or ``{"url", "filename"?, "mime_type"?}``); nothing is
uploaded then.

The answer is ``TranscriptionOutput.body``: JSON for ``json`` / ``verbose_json``, ``text/plain``
for ``text`` / ``srt``, ``text/vtt`` for ``vtt``. ``stream`` is not supported (a 400). Every
other field (``chunking_strategy``, ``include[]``, ...) reaches the provider unchanged
(``extra``); gateway fields ``fallbacks``, ``metadata`` (JSON in a form), ``client_id``,
``total_ms``.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import pydantic

from services.contracts.errors import GatewayError, ValidationError
from services.contracts.events import MediaSource, ResultProduced, TranscribeRequested
from services.runtime.media.refs import file_key

from ..asgi import Request, Response, read_body
from ..bodies import MULTIPART, FormReader, content_type
from .audio import overhead_header
from .chat import answer_headers, error_answer, invalid, key_of, split_gateway
from .files import FIELD_LIMIT, OCTET_STREAM, declared, discard, store_upload, upload_limit
from .images import required_text
from .jobs import submitted, wants_job

if TYPE_CHECKING:
    from ..context import Edge

URLENCODED = b"application/x-www-form-urlencoded"
TEXT_TYPES = {"text": b"text/plain; charset=utf-8", "srt": b"text/plain; charset=utf-8", "vtt": b"text/vtt"}
OWN = frozenset(
    {
        "model",
        "file",
        "language",
        "prompt",
        "response_format",
        "timestamp_granularities",
        "temperature",
        "stream",
    }
)


def _bad(param: str, message: str) -> ValidationError:
    return ValidationError(f"{param}: {message}", param=param)


@dataclass
class TranscribeCall:
    model: str
    params: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def format(self) -> str:
        return str(self.params.get("response_format", "json"))


def _form_value(name: str, value: Any) -> Any:
    """A form field's text as the JSON value a JSON body would carry."""
    if not isinstance(value, str):
        return value
    if name == "temperature":
        try:
            return float(value)
        except ValueError:
            raise _bad(name, f"must be a number, got {value[:40]!r}") from None
    if name == "total_ms":
        try:
            return int(value)
        except ValueError:
            raise _bad(name, f"must be a positive integer, got {value[:40]!r}") from None
    if name == "stream":
        return value.lower() == "true"
    if name == "metadata" or (name == "fallbacks" and value.startswith("[")):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            raise _bad(name, "must be JSON") from None
    if name == "fallbacks":
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def parse_transcription(body: dict[str, Any]) -> TranscribeCall:
    """Check a transcription body (form fields already turned into values); the file is apart."""
    model = required_text(body, "model")
    if body.get("stream"):
        raise _bad("stream", "streamed transcription is not supported")
    params: dict[str, Any] = {}
    for name in ("language", "prompt", "response_format", "temperature"):
        if body.get(name) is not None:
            params[name] = body[name]
    grains = body.get("timestamp_granularities")
    if grains is not None:
        params["timestamp_granularities"] = [grains] if isinstance(grains, str) else grains
    fields, extra = split_gateway(body, OWN)
    return TranscribeCall(model, params, fields, extra)


def _add_field(values: dict[str, Any], key: str, text: str) -> None:
    """One form field into ``values`` (``name[]``, repeated: a list under ``name``)."""
    name = key.removesuffix("[]")
    value = _form_value(name, text)
    if key.endswith("[]"):
        values.setdefault(name, []).append(value)
    else:
        values[name] = value


def _urlencoded(raw: bytes) -> dict[str, Any]:
    """A urlencoded form's fields as values."""
    out: dict[str, Any] = {}
    for key, text in urllib.parse.parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        _add_field(out, key, text)
    return out


def _json_source(value: Any) -> MediaSource:
    """``file`` of a JSON body: a reference string, or ``{"url", "filename"?, "mime_type"?}``
    (never a caller's ``media``: only the media-store sets it, from what it resolved)."""
    if isinstance(value, dict):
        value = {k: value[k] for k in ("url", "filename", "mime_type") if k in value}
    try:
        if isinstance(value, str):
            return MediaSource(url=value)
        if isinstance(value, dict):
            return MediaSource.model_validate(value)
    except pydantic.ValidationError:
        pass
    raise _bad("file", "required: an upload, or a URL, s3:// reference or file id")


async def _read_form(edge: Edge, req: Request) -> tuple[dict[str, Any], MediaSource, str | None]:
    """(fields, the file, the key of the upload stored, if any) of a multipart transcription."""
    assert req.caller is not None
    form = FormReader(req, body_limit=upload_limit(edge))
    values: dict[str, Any] = {}
    source: MediaSource | None = None
    stored: str | None = None
    try:
        while (part := await form.next_part()) is not None:
            if part.name == "file":
                if source is not None:
                    raise _bad("file", "one file per request")
                if part.filename is None:  # gateway extension: a reference
                    source = MediaSource(url=await form.text(FIELD_LIMIT))
                    continue
                file_id, saved = await store_upload(
                    edge, req.caller.tenant_id, part, form.chunks(), purpose="user_data"
                )
                stored = file_key(req.caller.tenant_id, file_id)
                mime = declared(part.content_type)
                source = MediaSource(
                    url=file_id, filename=saved.filename, mime_type=None if mime == OCTET_STREAM else mime
                )
                continue
            _add_field(values, part.name, await form.text(FIELD_LIMIT))
        if source is None:
            raise _bad("file", "required: an upload, or a URL, s3:// reference or file id")
    except BaseException:
        if stored is not None:
            await discard(edge.files, stored)
        raise
    return values, source, stored


def transcribe_event(
    edge: Edge, req: Request, call: TranscribeCall, source: MediaSource
) -> TranscribeRequested:
    assert req.caller is not None
    try:
        return edge.gw.transcribe_request(
            req.caller,
            call.model,
            source,
            request_id=req.request_id,
            extra=call.extra,
            **call.params,
            **call.fields,
            **key_of(req),
        )
    except pydantic.ValidationError as exc:
        raise invalid(exc) from None


async def create_transcription(edge: Edge, req: Request) -> Response:
    kind, _ = content_type(req)
    stored: str | None = None
    if kind == MULTIPART:
        body, source, stored = await _read_form(edge, req)
    elif kind in (b"application/json", b""):
        req.body = await read_body(req, edge.settings.max_body_bytes)
        body = req.json()
        source = _json_source(body.get("file"))
    elif kind == URLENCODED:
        body = _urlencoded(await read_body(req, edge.settings.max_body_bytes))
        source = _json_source(body.get("file"))
    else:
        raise ValidationError(
            "the body must be multipart/form-data (or JSON or a urlencoded form with file a URL or file id)",
            param="content-type",
        )
    try:
        call = parse_transcription(body)
        event = transcribe_event(edge, req, call, source)
        if wants_job(req, event):  # async: the upload stays, the job's answer is on llm.jobs
            stored = None
            return await submitted(edge, req, event)
        timeout = edge.timeout_for(call.fields.get("total_ms"))
        try:
            result = await req.until_disconnect(edge.gw.result(event, timeout))
        except GatewayError as err:
            return error_answer(err)
        return transcription_answer(req, result, call.format)
    finally:  # an upload lives as long as its request: answered (or refused, or given up), it goes
        if stored is not None:
            await discard(edge.files, stored)


def transcription_answer(req: Request, result: ResultProduced, fmt: str) -> Response:
    out = result.output
    if out is None or out.kind != "transcription":
        raise GatewayError("the transcription answer carries no text")
    headers = [overhead_header(req, result.latency.provider_ms), *answer_headers(result)]
    if isinstance(out.body, dict):
        return Response(200, orjson.dumps(out.body), headers)
    text_type = TEXT_TYPES.get(fmt, TEXT_TYPES["text"])
    return Response(200, out.body.encode(), headers, content_type=(b"content-type", text_type))

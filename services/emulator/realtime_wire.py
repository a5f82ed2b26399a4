"""Sessions and responses of the Realtime emulator in its two dialects: reading and rendering. Pure.

The GA dialect is the default; the beta dialect (header ``OpenAI-Beta: realtime=v1``) differs in
event names (:data:`BETA_NAMES`; ``conversation.item.done`` is GA only) and in the session and
response objects (beta ``modalities``, ``voice``, ``turn_detection``, ``input_audio_format`` at the
top; GA ``output_modalities`` and an ``audio: {input, output}`` tree). Both are read into one
:class:`Config` and rendered back per dialect.

``session.update`` / ``response.create`` payloads are read strictly at their top level (an unknown
parameter is an error, as on the real API, which catches a client speaking the other dialect; GA
also requires ``session.type: "realtime"``). Only PCM16 at 24 kHz is supported (``audio/pcm`` /
``pcm16``); other formats are refused. Semantic VAD is accepted and detected like server VAD.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .realtime_items import ClientError, Dialect, Item, check_keys, expect, one_of, required
from .realtime_vad import VadSettings

BETA_NAMES = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "conversation.item.added": "conversation.item.created",
}
_GA_ONLY = frozenset({"conversation.item.done"})
_GA_ONLY = frozenset({"conversation.item.done"})


def wire_type(event_type: str, dialect: Dialect) -> str | None:
    """The name of a (GA-named) server event in ``dialect``; None: the dialect has no such event."""
    if dialect == "ga":
        return event_type
    if event_type in _GA_ONLY:
        return None
    return BETA_NAMES.get(event_type, event_type)


# --- session --------------------------------------------------------------------------------------

DEFAULT_VAD: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
    "idle_timeout_ms": None,
}
_SEMANTIC_VAD: dict[str, Any] = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}


@dataclass(frozen=True, slots=True)
class Config:
    """What a session (or one response) is configured to do, in dialect-neutral terms."""

    output_audio: bool = True
    voice: str = "alloy"
    instructions: str = ""
    turn_detection: dict[str, Any] | None = field(default_factory=lambda: dict(DEFAULT_VAD))
    transcription: dict[str, Any] | None = None
    noise_reduction: dict[str, Any] | None = None
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    max_output_tokens: int | str = "inf"
    temperature: float = 0.8
    speed: float = 1.0

    def vad(self) -> VadSettings | None:
        """VAD settings, or None when turn detection is off (semantic VAD uses the defaults)."""
        td = self.turn_detection
        if td is None:
            return None
        if td["type"] != "server_vad":
            return VadSettings()
        return VadSettings(td["threshold"], td["prefix_padding_ms"], td["silence_duration_ms"])

    def turn_flag(self, key: str) -> bool:
        return bool(self.turn_detection and self.turn_detection.get(key, True))

    def token_cap(self) -> int | None:
        return self.max_output_tokens if isinstance(self.max_output_tokens, int) else None


PCM_FORMAT = {"type": "audio/pcm", "rate": 24000}


def _modalities(config: Config, dialect: Dialect) -> list[str]:
    if dialect == "beta":
        return ["text", "audio"] if config.output_audio else ["text"]
    return ["audio"] if config.output_audio else ["text"]


def session_body(
    config: Config, dialect: Dialect, session_id: str, model: str, expires_at: int
) -> dict[str, Any]:
    """The ``session`` object of ``session.created`` / ``session.updated``."""
    common = {
        "id": session_id,
        "object": "realtime.session",
        "model": model,
        "expires_at": expires_at,
        "instructions": config.instructions,
        "tools": list(config.tools),
        "tool_choice": config.tool_choice,
        "tracing": None,
    }
    if dialect == "beta":
        return {
            **common,
            "modalities": _modalities(config, dialect),
            "voice": config.voice,
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "input_audio_transcription": config.transcription,
            "input_audio_noise_reduction": config.noise_reduction,
            "turn_detection": config.turn_detection,
            "temperature": config.temperature,
            "max_response_output_tokens": config.max_output_tokens,
            "speed": config.speed,
        }
    return {
        "type": "realtime",
        **common,
        "output_modalities": _modalities(config, dialect),
        "max_output_tokens": config.max_output_tokens,
        "truncation": "auto",
        "prompt": None,
        "audio": {
            "input": {
                "format": PCM_FORMAT,
                "transcription": config.transcription,
                "noise_reduction": config.noise_reduction,
                "turn_detection": config.turn_detection,
            },
            "output": {"format": PCM_FORMAT, "voice": config.voice, "speed": config.speed},
        },
    }


_GA_SESSION_KEYS = frozenset(
    {"type", "audio", "include", "instructions", "max_output_tokens", "model", "output_modalities"}
    | {"parallel_tool_calls", "prompt", "reasoning", "tool_choice", "tools", "tracing", "truncation"}
)
_BETA_SESSION_KEYS = frozenset(
    {"client_secret", "input_audio_format", "input_audio_noise_reduction", "input_audio_transcription"}
    | {"instructions", "max_response_output_tokens", "modalities", "model", "output_audio_format", "speed"}
    | {"temperature", "tool_choice", "tools", "tracing", "turn_detection", "voice"}
)
_GA_RESPONSE_KEYS = frozenset(
    {"audio", "conversation", "input", "instructions", "max_output_tokens", "metadata", "output_modalities"}
    | {"parallel_tool_calls", "prompt", "reasoning", "tool_choice", "tools"}
)
_BETA_RESPONSE_KEYS = frozenset(
    {"conversation", "input", "instructions", "max_response_output_tokens", "metadata", "modalities"}
    | {"output_audio_format", "temperature", "tool_choice", "tools", "voice"}
)


def update_session(config: Config, raw: Any, dialect: Dialect) -> Config:
    """``config`` with a ``session.update``'s ``session`` applied (fields absent are kept)."""
    session = expect(raw, dict, "session", "an object")
    if dialect == "beta":
        check_keys(session, _BETA_SESSION_KEYS, "session.")
        return _beta_fields(config, session, "session.", max_key="max_response_output_tokens")
    one_of(required(session, "type", "session."), ("realtime",), "session.type")
    check_keys(session, _GA_SESSION_KEYS, "session.")
    return _ga_fields(config, session, "session.")


def response_config(config: Config, raw: Any, dialect: Dialect) -> tuple[Config, dict[str, Any]]:
    """The configuration of one response (the session's, overridden by ``response.create``'s
    ``response``), and the options that are not configuration (``conversation``, ``metadata``)."""
    response = expect(raw if raw is not None else {}, dict, "response", "an object")
    prefix = "response."
    if dialect == "beta":
        check_keys(response, _BETA_RESPONSE_KEYS, prefix)
        if "output_audio_format" in response:
            one_of(response["output_audio_format"], ("pcm16",), f"{prefix}output_audio_format")
        tuned = _beta_fields(config, response, prefix, max_key="max_response_output_tokens")
    else:
        check_keys(response, _GA_RESPONSE_KEYS, prefix)
        tuned = _ga_fields(config, response, prefix)
    conversation = response.get("conversation", "auto")
    expect(conversation, str, f"{prefix}conversation", "a string")
    one_of(conversation, ("auto", "none"), f"{prefix}conversation")
    metadata = response.get("metadata")
    if metadata is not None:
        expect(metadata, dict, f"{prefix}metadata", "an object")
    return tuned, {"conversation": conversation, "metadata": metadata}


def _ga_fields(config: Config, body: dict[str, Any], prefix: str) -> Config:
    changes = _shared_fields(body, prefix, max_key="max_output_tokens")
    if "output_modalities" in body:
        changes["output_audio"] = _output_audio(body["output_modalities"], f"{prefix}output_modalities")
    audio = expect(body.get("audio", {}), dict, f"{prefix}audio", "an object")
    inp = expect(audio.get("input", {}), dict, f"{prefix}audio.input", "an object")
    out = expect(audio.get("output", {}), dict, f"{prefix}audio.output", "an object")
    for where, node in ((f"{prefix}audio.input", inp), (f"{prefix}audio.output", out)):
        if node.get("format") is not None:
            fmt = expect(node["format"], dict, f"{where}.format", "an object")
            one_of(fmt.get("type"), ("audio/pcm",), f"{where}.format.type")
    if "turn_detection" in inp:
        changes["turn_detection"] = _turn_detection(
            inp["turn_detection"], f"{prefix}audio.input.turn_detection"
        )
    if "transcription" in inp:
        changes["transcription"] = _optional_object(
            inp["transcription"], f"{prefix}audio.input.transcription"
        )
    if "noise_reduction" in inp:
        changes["noise_reduction"] = _optional_object(
            inp["noise_reduction"], f"{prefix}audio.input.noise_reduction"
        )
    if "voice" in out:
        changes["voice"] = expect(out["voice"], str, f"{prefix}audio.output.voice", "a string")
    if "speed" in out:
        changes["speed"] = float(
            expect(out["speed"], (int, float), f"{prefix}audio.output.speed", "a number")
        )
    return replace(config, **changes)


def _beta_fields(config: Config, body: dict[str, Any], prefix: str, max_key: str) -> Config:
    changes = _shared_fields(body, prefix, max_key=max_key)
    if "modalities" in body:
        changes["output_audio"] = _output_audio(body["modalities"], f"{prefix}modalities")
    for key in ("input_audio_format", "output_audio_format"):
        if key in body:
            one_of(body[key], ("pcm16",), f"{prefix}{key}")
    if "turn_detection" in body:
        changes["turn_detection"] = _turn_detection(body["turn_detection"], f"{prefix}turn_detection")
    if "input_audio_transcription" in body:
        where = f"{prefix}input_audio_transcription"
        changes["transcription"] = _optional_object(body["input_audio_transcription"], where)
    if "input_audio_noise_reduction" in body:
        where = f"{prefix}input_audio_noise_reduction"
        changes["noise_reduction"] = _optional_object(body["input_audio_noise_reduction"], where)
    if "voice" in body:
        changes["voice"] = expect(body["voice"], str, f"{prefix}voice", "a string")
    for key in ("speed", "temperature"):
        if key in body:
            changes[key] = float(expect(body[key], (int, float), f"{prefix}{key}", "a number"))
    return replace(config, **changes)


def _shared_fields(body: dict[str, Any], prefix: str, max_key: str) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if "instructions" in body:
        changes["instructions"] = expect(body["instructions"], str, f"{prefix}instructions", "a string")
    if "tools" in body:
        changes["tools"] = _tools(body["tools"], f"{prefix}tools")
    if "tool_choice" in body:
        changes["tool_choice"] = _tool_choice(body["tool_choice"], f"{prefix}tool_choice")
    if "parallel_tool_calls" in body:
        where = f"{prefix}parallel_tool_calls"
        changes["parallel_tool_calls"] = expect(body["parallel_tool_calls"], bool, where, "a boolean")
    if max_key in body:
        changes["max_output_tokens"] = _max_tokens(body[max_key], f"{prefix}{max_key}")
    return changes


def _output_audio(value: Any, param: str) -> bool:
    modalities = expect(value, list, param, "an array")
    if not modalities:
        raise ClientError(f"Invalid '{param}': empty array.", param=param, code="invalid_value")
    for i, modality in enumerate(modalities):
        one_of(modality, ("text", "audio"), f"{param}[{i}]")
    return "audio" in modalities


def _optional_object(value: Any, param: str) -> dict[str, Any] | None:
    return None if value is None else dict(expect(value, dict, param, "an object"))


def _turn_detection(value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    given = expect(value, dict, param, "an object")
    kind = one_of(required(given, "type", f"{param}."), ("server_vad", "semantic_vad"), f"{param}.type")
    merged = dict(DEFAULT_VAD if kind == "server_vad" else _SEMANTIC_VAD)
    for key, val in given.items():
        if key not in merged:
            raise ClientError(
                f"Unknown parameter: '{param}.{key}'.", param=f"{param}.{key}", code="unknown_parameter"
            )
        merged[key] = val
    if kind == "server_vad":
        threshold = expect(merged["threshold"], (int, float), f"{param}.threshold", "a number")
        if not 0 <= threshold <= 1:
            raise ClientError(
                f"Invalid '{param}.threshold': must be between 0 and 1.", param=f"{param}.threshold"
            )
        for key in ("prefix_padding_ms", "silence_duration_ms"):
            if expect(merged[key], int, f"{param}.{key}", "an integer") < 0:
                raise ClientError(f"Invalid '{param}.{key}': must be >= 0.", param=f"{param}.{key}")
    for key in ("create_response", "interrupt_response"):
        expect(merged[key], bool, f"{param}.{key}", "a boolean")
    return merged


def _tools(value: Any, param: str) -> tuple[dict[str, Any], ...]:
    tools = expect(value, list, param, "an array")
    for i, tool in enumerate(tools):
        expect(tool, dict, f"{param}[{i}]", "an object")
        if tool.get("type", "function") == "function":
            expect(required(tool, "name", f"{param}[{i}]."), str, f"{param}[{i}].name", "a string")
    return tuple(dict(tool) for tool in tools)


def _tool_choice(value: Any, param: str) -> Any:
    if isinstance(value, str):
        return one_of(value, ("auto", "none", "required"), param)
    choice = expect(value, dict, param, "a string or an object")
    one_of(choice.get("type"), ("function", "mcp"), f"{param}.type")
    if choice["type"] == "function":
        expect(required(choice, "name", f"{param}."), str, f"{param}.name", "a string")
    return dict(choice)


def _max_tokens(value: Any, param: str) -> int | str:
    if value == "inf":
        return "inf"
    tokens = expect(value, int, param, "an integer or 'inf'")
    if not 1 <= tokens <= 4096:
        raise ClientError(f"Invalid '{param}': must be between 1 and 4096 or 'inf'.", param=param)
    return int(tokens)


# --- responses ------------------------------------------------------------------------------------


def usage_body(
    input_text: int, input_audio: int, cached: int, output_text: int, output_audio: int
) -> dict[str, Any]:
    """``response.done``'s ``usage``; ``cached`` (a part of the input) counts text first."""
    prompt, completion = input_text + input_audio, output_text + output_audio
    cached = min(cached, prompt)
    cached_text = min(cached, input_text)
    return {
        "total_tokens": prompt + completion,
        "input_tokens": prompt,
        "output_tokens": completion,
        "input_token_details": {
            "text_tokens": input_text,
            "audio_tokens": input_audio,
            "cached_tokens": cached,
            "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": cached - cached_text},
        },
        "output_token_details": {"text_tokens": output_text, "audio_tokens": output_audio},
    }


def response_body(
    response_id: str,
    config: Config,
    dialect: Dialect,
    *,
    status: str,
    output: list[Item],
    conversation_id: str | None,
    metadata: dict[str, Any] | None,
    status_details: dict[str, Any] | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``response`` object of ``response.created`` / ``response.done``."""
    body: dict[str, Any] = {
        "object": "realtime.response",
        "id": response_id,
        "status": status,
        "status_details": status_details,
        "output": [item.render(dialect) for item in output],
        "conversation_id": conversation_id,
        "max_output_tokens": config.max_output_tokens,
        "usage": usage,
        "metadata": metadata,
    }
    if dialect == "beta":
        body.update(
            modalities=_modalities(config, dialect),
            voice=config.voice,
            output_audio_format="pcm16",
            temperature=config.temperature,
        )
    else:
        body["output_modalities"] = _modalities(config, dialect)
        body["audio"] = {"output": {"format": PCM_FORMAT, "voice": config.voice}}
    return body

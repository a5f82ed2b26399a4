"""Per-request emulator scenarios: what a fake provider does with one request.

A scenario comes from two places, merged key by key (the header wins):

* the model name: ``NAME@key=value,key=value`` (e.g. ``gpt-emu@tokens=20,chunk_delay_ms=10``).
  The scenario starts at the first ``@`` that is followed by ``identifier=``, so
  model names that themselves contain ``@`` (``claude-x@20240620``) still work;
* the ``x-emulator-scenario: key=value,key=value`` request header.

Keys (unknown keys are an error naming the key):

``ttfb_ms``          delay before the first byte of the response (float, default 0)
``chunk_delay_ms``   delay between stream writes; non-streaming responses wait
                     ``tokens * chunk_delay_ms`` to emulate generation (float, default 0)
``tokens``           completion tokens to generate (default 8), capped by the request's max tokens
``status``           HTTP error status (400..599) answered with the provider's error body
``fail_first``       the first N calls fail (with ``status``, default 500), later ones succeed;
                     counted per ``key``
``hang_first``       the first N calls hang (as ``hang``), later ones are answered; counted per
                     ``key`` apart from ``fail_first`` (a provider that stops answering for a while)
``key``              counter key for ``fail_first`` / ``hang_first`` (default: the whole scenario string)
``disconnect_after`` stream N content chunks then drop the connection (non-streaming: drop at once)
``hang``             1 = accept the request and never answer until the client goes away
``cached``           report N cached prompt tokens (capped at the prompt size)
``tool``             1 = answer with a tool call when the request offers tools (same as ``tools=1``)
``tools``            N = answer with N tool calls in one message (parallel tool calls), the i-th
                     to the i-th offered tool, cycling; 0..1024 (default 0; ``tool=1`` counts as 1).
                     ``tool_choice`` still rules: ``none`` gives text, a forced choice gives at
                     least one call, ``parallel_tool_calls: false`` / ``disable_parallel_tool_use``
                     at most one; a request whose last message is a tool result gets text unless
                     ``tool_choice`` forces a tool (see :mod:`.tools`)
``schema_violation`` 1 = generated JSON (structured-output answers, tool arguments) is still valid
                     JSON but breaks the requested schema: a required property is dropped and/or a
                     property has the wrong type (see :func:`.schemas.violation`)
``retry_after_ms``   add ``retry-after-ms`` / ``retry-after`` headers to error responses
``max_inputs``       embeddings: most inputs one request may carry (default: the provider's,
                     2048 for OpenAI, 512 for Ollama); more is the provider's 400 error
``echo``             1 = the text answer is the last user message verbatim (its text parts joined),
                     one piece per word with its leading whitespace, so a test sees what the
                     provider received; ``completion_tokens`` is the piece count (a bare ``echo``
                     item, without ``=1``, means the same). Tool calls and structured output
                     are answered as without it
``fail_input``       embeddings: a request with an input exactly equal to this text (after the
                     scenario's whitespace stripping; token arrays compare as their ids joined by
                     spaces) is refused with the provider's 400 error naming the first such index.
                     The text cannot hold ``,``; use the model name or the ``emulator_scenario``
                     body field for non-latin-1 text (the header is read as latin-1)

Everything here is pure; :func:`resolve` is memoised because benchmarks send the
same few model/header strings over and over.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

HEADER = "x-emulator-scenario"

MAX_TOOL_CALLS = 1024

_SPLIT = re.compile(r"@(?=[A-Za-z_][A-Za-z0-9_]*=)")


class ScenarioError(ValueError):
    """A scenario string that cannot be understood (unknown key, bad value)."""


@dataclass(frozen=True, slots=True)
class Scenario:
    ttfb_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    tokens: int = 8
    status: int | None = None
    fail_first: int = 0
    hang_first: int = 0
    key: str = ""
    disconnect_after: int | None = None
    hang: bool = False
    cached: int = 0
    tool: bool = False
    retry_after_ms: int | None = None
    tools: int = 0
    schema_violation: bool = False
    max_inputs: int | None = None
    fail_input: str | None = None
    echo: bool = False

    @property
    def tool_calls(self) -> int:
        """Tool calls the scenario asks for (``tools=N``, or 1 for ``tool=1``)."""
        return max(self.tools, 1 if self.tool else 0)

    def fail_status(self) -> int:
        """Status used by ``fail_first`` failures."""
        return self.status or 500


def _non_negative_float(key: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ScenarioError(f"emulator scenario key '{key}' needs a number, got {raw!r}") from None
    if value < 0 or value != value:
        raise ScenarioError(f"emulator scenario key '{key}' must be >= 0, got {raw!r}")
    return value


def _non_negative_int(key: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ScenarioError(f"emulator scenario key '{key}' needs an integer, got {raw!r}") from None
    if value < 0:
        raise ScenarioError(f"emulator scenario key '{key}' must be >= 0, got {raw!r}")
    return value


def _status(key: str, raw: str) -> int:
    value = _non_negative_int(key, raw)
    if not 400 <= value <= 599:
        raise ScenarioError(
            f"emulator scenario key '{key}' must be an HTTP error status 400..599, got {raw!r}"
        )
    return value


def _flag(key: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ScenarioError(f"emulator scenario key '{key}' needs 0 or 1, got {raw!r}")


def _text(key: str, raw: str) -> str:
    return raw


def _tool_count(key: str, raw: str) -> int:
    value = _non_negative_int(key, raw)
    if value > MAX_TOOL_CALLS:
        raise ScenarioError(f"emulator scenario key '{key}' must be <= {MAX_TOOL_CALLS}, got {raw!r}")
    return value


def _positive_int(key: str, raw: str) -> int:
    value = _non_negative_int(key, raw)
    if value < 1:
        raise ScenarioError(f"emulator scenario key '{key}' must be >= 1, got {raw!r}")
    return value


#: Each key's converter returns a value of its ``Scenario`` field's type (checked by the tests).
_CONVERTERS: dict[str, Callable[[str, str], Any]] = {
    "ttfb_ms": _non_negative_float,
    "chunk_delay_ms": _non_negative_float,
    "tokens": _non_negative_int,
    "status": _status,
    "fail_first": _non_negative_int,
    "hang_first": _non_negative_int,
    "key": _text,
    "disconnect_after": _non_negative_int,
    "hang": _flag,
    "cached": _non_negative_int,
    "tool": _flag,
    "retry_after_ms": _non_negative_int,
    "tools": _tool_count,
    "schema_violation": _flag,
    "max_inputs": _positive_int,
    "fail_input": _text,
    "echo": _flag,
}

KEYS = frozenset(_CONVERTERS)
#: Keys of the videos and batch APIs (see :mod:`.job_scenario`): ignored here.
JOB_KEY_PREFIXES = ("video_", "batch_")


def split_model(model: str) -> tuple[str, str]:
    """``"gpt@tokens=3"`` -> ``("gpt", "tokens=3")``; no scenario -> ``(model, "")``."""
    match = _SPLIT.search(model)
    if match is None:
        return model, ""
    return model[: match.start()], model[match.end() :]


def parse_pairs(spec: str) -> dict[str, str]:
    """``"a=1, b=2"`` -> ``{"a": "1", "b": "2"}``; empty items are skipped; keys are checked."""
    pairs: dict[str, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if key.startswith(JOB_KEY_PREFIXES):
            continue  # the asynchronous APIs' keys, read by job_scenario (single calls ignore them)
        if not sep and _CONVERTERS.get(key) is _flag:
            value = "1"  # a bare flag (``echo``) is set
        elif not sep:
            raise ScenarioError(f"emulator scenario item {item!r} is not key=value")
        if key not in _CONVERTERS:
            known = ", ".join(sorted(_CONVERTERS))
            raise ScenarioError(f"unknown emulator scenario key '{key}' (known keys: {known})")
        pairs[key] = value.strip()
    return pairs


def build(pairs: dict[str, str], default_key: str = "") -> Scenario:
    """Convert checked pairs into a :class:`Scenario` (``key`` defaults to ``default_key``)."""
    values = {key: _CONVERTERS[key](key, raw) for key, raw in pairs.items()}
    return replace(Scenario(key=default_key), **values)


@lru_cache(maxsize=4096)
def resolve(model: str, header: str | None = None) -> tuple[str, Scenario]:
    """Split ``model`` into (bare name, merged scenario); the header wins on conflicts.

    The default ``fail_first`` counter key is the whole scenario string
    (model part and header part joined by ``|``). Raises :class:`ScenarioError`.
    """
    name, spec = split_model(model)
    pairs = parse_pairs(spec)
    if header:
        pairs.update(parse_pairs(header))
    return name, build(pairs, default_key=f"{spec}|{header or ''}")


DEFAULT = Scenario()

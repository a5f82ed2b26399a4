"""How the CLI talks to a person: a line per step while ``llmgw up`` waits, tables for listings.

``Progress`` is what ``Stack`` and ``infra`` call as each step begins (``"kafka: waiting for the
broker"``); ``progress_for`` gives a printer when stderr is a terminal or ``--progress`` asks, and
None otherwise, so scripts and tests see nothing new. Each line carries the time since ``up``
began, so the gap between two lines is how long a step took.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

#: Called once per step, as it begins, with what is being waited for.
Progress = Callable[[str], None]


class LinePrinter:
    """``Progress`` writing ``llmgw: [  12.3s] <step>`` lines to ``stream`` (stderr)."""

    def __init__(self, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._t0 = clock()

    def __call__(self, step: str) -> None:
        print(f"llmgw: [{self._clock() - self._t0:6.1f}s] {step}", file=self._stream, flush=True)


def progress_for(asked: bool, stream: TextIO | None = None) -> Progress | None:
    """A printer on ``stream`` (stderr) when ``asked`` (``--progress``) or it is a terminal."""
    s = stream if stream is not None else sys.stderr
    return LinePrinter(s) if asked or s.isatty() else None


def table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, footer: Sequence[Any] | None = None
) -> str:
    """Columns as wide as their widest cell; numbers right-aligned (ints with thousands separators),
    text left-aligned; ``footer`` (a totals row) below a rule."""
    cells = [[_cell(v) for v in r] for r in rows]
    foot = [_cell(v) for v in footer] if footer is not None else None
    numeric = [
        all(_is_number(r[i]) for r in [*rows, *([footer] if footer else [])]) and bool(rows or footer)
        for i in range(len(headers))
    ]
    widths = [
        max([len(h), *(len(c[i]) for c in [*cells, *([foot] if foot else [])])])
        for i, h in enumerate(headers)
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(list(headers)), *(line(c) for c in cells)]
    if foot is not None:
        out += ["  ".join("-" * w for w in widths), line(foot)]
    return "\n".join(out)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _cell(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.6f}"
    return str(v)


USAGE_COLUMNS = ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd")


def usage_table(report: dict[str, Any]) -> str:
    """``llmgw usage report`` on a terminal: the report's JSON (``Report.as_json``) as a table."""
    since, until = (report[k][:16].replace("T", " ") for k in ("since", "until"))
    by = report.get("by")
    title = f"usage of tenant {report['tenant']}, {since} to {until} UTC" + (f", by {by}" if by else "")
    headers = [by or "tenant", "requests", "errors", "prompt", "completion", "total", "cost_usd"]
    total = report["total"]
    if not by:
        return title + "\n" + table(headers, [[report["tenant"], *(total[c] for c in USAGE_COLUMNS)]])
    rows = [[g["key"], *(g[c] for c in USAGE_COLUMNS)] for g in report["groups"]]
    return title + "\n" + table(headers, rows, footer=["TOTAL", *(total[c] for c in USAGE_COLUMNS)])


def sessions_table(listing: dict[str, Any]) -> str:
    """``llmgw usage sessions`` on a terminal: the listing's JSON (``SessionsListing.as_json``)."""
    since, until = (listing[k][:16].replace("T", " ") for k in ("since", "until"))
    title = f"realtime sessions of tenant {listing['tenant']} started {since} to {until} UTC"
    headers = ["started", "session", "user", "key", "model", "turns", "input", "output", "cached"]
    headers += ["cost_usd", "close", "ended_by"]
    rows = [
        [
            s["started_at"][:19].replace("T", " "),
            s["request_id"],
            s.get("user_id"),
            s.get("api_key"),
            s.get("alias"),
            *(
                int(s["usage"].get(c) or 0)
                for c in ("turns", "prompt_tokens", "completion_tokens", "cached_tokens")
            ),
            float(s["usage"].get("cost_usd") or 0.0),
            s.get("close_code"),
            s.get("ended_by"),
        ]
        for s in listing["sessions"]
    ]
    t = listing["total"]
    footer = [f"{t['sessions']} sessions", "", "", "", ""]
    footer += [
        t["turns"],
        t["prompt_tokens"],
        t["completion_tokens"],
        t["cached_tokens"],
        t["cost_usd"],
        "",
        "",
    ]
    return title + "\n" + table(headers, rows, footer=footer)

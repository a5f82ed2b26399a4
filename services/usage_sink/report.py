"""``llmgw usage report``: requests, tokens and cost of one tenant, read back from the usage ledger.

Reads the tenant's ``date=`` directories from the first day of the window to today, only the
``hour=`` directories that can hold records of the window, and counts each record whose
``occurred_at`` is in ``[since, until)``. Groups: ``model`` (the alias asked for), ``user``,
``key`` (the API key's name; for records without one, the caller's ``client_id``), ``day``
(UTC). Records are counted as stored: the sink stores each once.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from services.runtime.s3 import ObjectStore

from .layout import date_prefix

BY = ("model", "user", "key", "day")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime) -> datetime:
    """``30m``, ``24h``, ``7d``, ``2w`` back from ``now``, or an ISO date / date-time (UTC unless it says)."""
    if m := _DURATION.match(text.strip()):
        return now - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since: {text!r} is neither a duration (30m, 24h, 7d) nor an ISO date") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@dataclass
class Totals:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, rec: dict[str, Any]) -> None:
        self.requests += 1
        self.errors += rec.get("status") != "ok"
        self.prompt_tokens += int(rec.get("prompt_tokens") or 0)
        self.completion_tokens += int(rec.get("completion_tokens") or 0)
        self.total_tokens += int(rec.get("total_tokens") or 0)
        self.cost_usd += float(rec.get("cost_usd") or 0.0)


@dataclass
class Report:
    tenant: str
    since: datetime
    until: datetime
    by: str | None
    total: Totals = field(default_factory=Totals)
    groups: dict[str, Totals] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "by": self.by,
            "total": _rounded(asdict(self.total)),
            "groups": [{"key": k, **_rounded(asdict(v))} for k, v in sorted(self.groups.items())],
        }

    def table(self) -> str:
        head = f"{self.by or 'tenant':<28} {'requests':>9} {'errors':>7} {'prompt':>10} {'completion':>10} {'total':>10} {'cost_usd':>12}"
        rows = [(k, v) for k, v in sorted(self.groups.items())] if self.by else []
        rows.append(("TOTAL" if self.by else self.tenant, self.total))
        lines = [
            f"usage of tenant {self.tenant} from {self.since:%Y-%m-%d %H:%M} to {self.until:%Y-%m-%d %H:%M} UTC",
            head,
        ]
        for k, t in rows:
            lines.append(
                f"{k[:28]:<28} {t.requests:>9} {t.errors:>7} {t.prompt_tokens:>10} {t.completion_tokens:>10} "
                f"{t.total_tokens:>10} {t.cost_usd:>12.6f}"
            )
        return "\n".join(lines)


def _rounded(d: dict[str, Any]) -> dict[str, Any]:
    return d | {"cost_usd": round(d["cost_usd"], 9)}


def group_key(rec: dict[str, Any], by: str, occurred: datetime) -> str:
    if by == "model":
        return str(rec.get("alias") or "-")
    if by == "user":
        return str(rec.get("user_id") or "-")
    if by == "key":  # records from before usage named the key: the client id stands for it
        return str(rec.get("api_key") or rec.get("client_id") or "-")
    if by == "day":
        return f"{occurred:%Y-%m-%d}"
    raise ValueError(f"--by must be one of {', '.join(BY)}, got {by!r}")


def aggregate(report: Report, lines: Iterable[bytes]) -> Report:
    """Add every record of ``lines`` (NDJSON usage records) that falls in the report's window."""
    for line in lines:
        if not line.strip():
            continue
        rec = orjson.loads(line)
        occurred = datetime.fromisoformat(rec["occurred_at"]).astimezone(UTC)
        if not report.since <= occurred < report.until:
            continue
        report.total.add(rec)
        if report.by:
            report.groups.setdefault(group_key(rec, report.by, occurred), Totals()).add(rec)
    return report


def days(since: datetime, until: datetime) -> list[str]:
    d, last, out = since.astimezone(UTC).date(), until.astimezone(UTC).date(), []
    while d <= last:
        out.append(d.isoformat())
        d += timedelta(days=1)
    return out


def _hour_in_window(key: str, since: datetime, until: datetime) -> bool:
    """Whether the object's ``date=/hour=`` directory overlaps ``[since, until)``."""
    m = re.search(r"/date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/", key)
    if not m:
        return False
    start = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}:00:00+00:00")
    return start < until and start + timedelta(hours=1) > since


async def usage_report(
    store: ObjectStore,
    tenant: str,
    *,
    since: datetime,
    until: datetime,
    by: str | None = None,
    concurrency: int = 16,
) -> Report:
    if by is not None and by not in BY:
        raise ValueError(f"--by must be one of {', '.join(BY)}, got {by!r}")
    report = Report(tenant, since, until, by)
    listings = await asyncio.gather(*(store.keys(date_prefix(tenant, d)) for d in days(since, until)))
    keys = [k for ks in listings for k in ks if k.endswith(".ndjson") and _hour_in_window(k, since, until)]
    slots = asyncio.Semaphore(concurrency)

    async def read(key: str) -> bytes:
        async with slots:
            obj = await store.get(key)
        return obj.body if obj else b""

    for body in await asyncio.gather(*(read(k) for k in keys)):
        aggregate(report, body.splitlines())
    return report

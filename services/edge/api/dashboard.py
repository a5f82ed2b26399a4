"""The usage dashboard: ``GET /dashboard`` (one self-contained HTML page) and
``GET /dashboard/data`` (the JSON it draws), read from the usage ledger.

* **Who sees what.** ``/dashboard/data`` wants ``Authorization: Bearer <key>``: the key whose
  SHA-256 is ``dashboard.admin_key_sha256`` in the configuration sees every tenant (the tenants
  with a directory in the usage bucket); a tenant's API key sees its own tenant, and asking for
  another (``tenant=``) is 403. A missing or unknown key is 401, recorded like every edge refusal.
  The page itself holds no data: it asks for a key and keeps it in the tab's ``sessionStorage``.
* **Query.** ``since`` (a duration back from now, ``30m``, ``24h``, ``7d``, or an ISO date-time;
  default ``24h``; at most 31 days), ``until`` (ISO; default now), and exact-match filters
  ``tenant``, ``model`` (the alias asked for), ``user``, ``key`` (the API key's name, else the
  ``client_id``). ``fresh=1`` skips the answer cache.
* **Cost.** One answer per (scope, query) is kept ``dashboard.cache_ttl_s`` (concurrent askers
  share one computation); objects once read are kept (``usage_view.ObjectCache``), so a refresh
  costs one listing per tenant and day of the window plus the objects written since.
* **Charts** are drawn in the browser: inline SVG made by the page's own small script (no
  library, nothing fetched but ``/dashboard/data``), under a content security policy allowing
  only that script and style (by hash) and requests to the edge itself.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import orjson

from services.contracts.errors import ValidationError

from ..asgi import Request, Response
from ..auth import bearer_token
from ..errors import HTTPError
from ..usage_stats import summarize
from ..usage_view import ObjectCache, S3UsageLedger, UsageLedger, read_records

if TYPE_CHECKING:
    from ..context import Edge

PAGE = Path(__file__).resolve().parents[1] / "static" / "dashboard.html"
FILTERS = ("tenant", "model", "user", "key")
MAX_WINDOW = timedelta(days=31)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

#: Opens the usage ledger of an edge for one read (tests: an in-memory ledger).
OpenLedger = Callable[["Edge"], AbstractAsyncContextManager[UsageLedger]]


def s3_ledger(edge: Edge) -> AbstractAsyncContextManager[UsageLedger]:
    rt = edge.settings.runtime
    return S3UsageLedger(rt.usage_bucket, endpoint_url=rt.s3_url, create_bucket=False)


def parse_time(text: str, now: datetime, name: str) -> datetime:
    """``30m``, ``24h``, ``7d``, ``2w`` back from ``now``, or an ISO date / date-time (UTC unless it says)."""
    if m := _DURATION.match(text.strip()):
        return now - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(
            f"{name}: {text!r} is neither a duration (30m, 24h, 7d) nor an ISO date", param=name
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@cache
def page() -> tuple[bytes, bytes]:
    """The page and its content security policy: its one script and one style, by hash."""
    html = PAGE.read_bytes()

    def digest(tag: bytes) -> str:
        m = re.search(rb"<" + tag + rb">(.*?)</" + tag + rb">", html, re.S)
        assert m, f"{PAGE} has no <{tag.decode()}>"
        return "'sha256-" + base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode() + "'"

    csp = (
        f"default-src 'none'; script-src {digest(b'script')}; style-src {digest(b'style')}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return html, csp.encode()


class Dashboard:
    """The two routes and their caches (one per process; answers keyed by bucket, scope and query)."""

    def __init__(self, open_ledger: OpenLedger = s3_ledger, *, clock: Callable[[], float] = time.time):
        self._open = open_ledger
        self._clock = clock
        self._objects: dict[tuple[str | None, str], ObjectCache] = {}
        self._answers: dict[tuple[object, ...], tuple[float, asyncio.Future[bytes]]] = {}

    async def page(self, edge: Edge, req: Request) -> Response:
        html, csp = page()
        headers = [
            (b"content-security-policy", csp),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"cache-control", b"no-cache"),
        ]
        return Response(200, html, headers, content_type=(b"content-type", b"text/html; charset=utf-8"))

    async def data(self, edge: Edge, req: Request) -> Response:
        scope = self.scope(edge, req)
        query = {k: v[-1] for k, v in parse_qs(req.scope.get("query_string", b"").decode("latin-1")).items()}
        if scope is not None and query.get("tenant", scope) != scope:
            raise HTTPError(403, f"this key sees only tenant {scope!r}")
        rt = edge.settings.runtime
        where = (rt.s3_url, rt.usage_bucket)
        key = (where, scope, *(query.get(k) for k in ("since", "until", *FILTERS)))
        now = self._clock()
        hit = self._answers.get(key)
        fresh = hit is None or hit[0] <= now or query.get("fresh") == "1"
        if fresh:
            self._answers = {k: v for k, v in self._answers.items() if v[0] > now}
            future: asyncio.Future[bytes] = asyncio.ensure_future(self._compute(edge, where, scope, query))
            self._answers[key] = (now + edge.config.dashboard.cache_ttl_s, future)
        else:
            assert hit is not None
            future = hit[1]
        try:
            body = await asyncio.shield(future)
        except Exception:  # a failed answer is not kept (a cancelled wait leaves it to the others)
            if self._answers.get(key, (0.0, None))[1] is future:
                del self._answers[key]
            raise
        headers = [
            (b"cache-control", b"no-store"),
            (b"x-llmgw-dashboard-cache", b"miss" if fresh else b"hit"),
        ]
        return Response(200, body, headers)

    @staticmethod
    def scope(edge: Edge, req: Request) -> str | None:
        """None for the admin key (every tenant), else the tenant of the caller's API key."""
        admin = edge.config.dashboard.admin_key_sha256
        token = bearer_token(req.authorization)
        if admin is not None and token is not None:
            if hmac.compare_digest(hashlib.sha256(token).hexdigest(), admin):
                return None
        caller = edge.keys.authenticate(req.authorization)
        req.caller = caller
        return caller.tenant_id

    async def _compute(
        self, edge: Edge, where: tuple[str | None, str], scope: str | None, query: dict[str, str]
    ) -> bytes:
        now = datetime.fromtimestamp(self._clock(), UTC)
        until = parse_time(query["until"], now, "until") if query.get("until") else now
        since = parse_time(query.get("since") or "24h", until if "until" in query else now, "since")
        if not since < until:
            raise ValidationError("since must be before until", param="since")
        if until - since > MAX_WINDOW:
            raise ValidationError("the window is at most 31 days", param="since")
        objects = self._objects.setdefault(where, ObjectCache())
        async with self._open(edge) as ledger:
            everyone = [scope] if scope is not None else sorted(await ledger.tenants())
            wanted = [query["tenant"]] if query.get("tenant") else everyone
            records = await read_records(ledger, wanted, since, until, objects)
        filters = {k: query[k] for k in FILTERS if query.get(k)}
        records = [r for r in records if all(getattr(r, k) == v for k, v in filters.items())]
        doc = {
            "scope": {"admin": scope is None, "tenant": scope},
            "tenants": everyone,
            "filters": filters,
            "generated_at": now.isoformat(),
            **summarize(records, since, until),
        }
        return orjson.dumps(doc)

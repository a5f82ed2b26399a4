"""The usage dashboard in a real browser: Debian's Chromium, headless, driven over the Chrome
DevTools Protocol (``websockets``; no browser download, no driver).

The test's own requests (fresh users in two tenants, over Kafka with the SDK: successes on two
models and two API key names, one streamed, a provider failure and a media refusal) are read
back from ``llm.usage`` as the executor and media-store recorded them; once the usage sink has
written them (the data endpoint is polled), the page must show exactly those numbers in its
tiles, charts and table, a tenant key must see only its tenant, a bad key must be refused, the
console must stay free of errors, and a screenshot goes to ``bench/results/``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import math
import shutil
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from services.client import GatewayClient
from services.contracts.errors import ERRORS, GatewayError
from services.contracts.events import UsageRecorded

from .helpers import TopicTail

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ADMIN_KEY, DEMO_KEY = "sk-llmgw-admin", "sk-llmgw-demo"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Chromium (apt-get install -y chromium; .ci/run installs it)"
)


# --- a minimal DevTools client ------------------------------------------------------------


class CdpError(Exception):
    pass


class Browser:
    """``chromium --headless=new --remote-debugging-port=0``; one page, attached (flat sessions)."""

    def __init__(self, user_data_dir: Path):
        self.user_data_dir = user_data_dir
        self.errors: list[str] = []  # console errors, uncaught exceptions, error log entries
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: list[tuple[str, asyncio.Future[dict[str, Any]]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.session: str | None = None

    async def __aenter__(self) -> Browser:
        self.proc = await asyncio.create_subprocess_exec(
            CHROMIUM,
            "--headless=new",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.user_data_dir}",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--hide-scrollbars",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        async with asyncio.timeout(30):
            while not (line := (await self.proc.stderr.readline()).decode()).startswith(
                "DevTools listening on "
            ):
                assert line, "chromium exited before it listened"
        self._tasks.append(asyncio.create_task(self._drain(self.proc.stderr)))
        self.ws: ClientConnection = await connect(line.split(" on ", 1)[1].strip(), max_size=None)
        self._tasks.append(asyncio.create_task(self._read()))
        target = await self.send("Target.createTarget", {"url": "about:blank"}, browser=True)
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, browser=True
        )
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            await self.send(f"{domain}.enable")
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in self._tasks:
            t.cancel()
        await self.ws.close()
        self.proc.kill()
        await self.proc.wait()

    @staticmethod
    async def _drain(stream: asyncio.StreamReader) -> None:
        while await stream.read(65536):
            pass

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            if "id" in msg:
                fut = self._pending.pop(msg["id"])
                if "error" in msg:
                    fut.set_exception(CdpError(f"{msg['error']}"))
                else:
                    fut.set_result(msg.get("result", {}))
                continue
            method, params = msg.get("method", ""), msg.get("params", {})
            self._note(method, params)
            for name, fut in list(self._waiters):
                if name == method and not fut.done():
                    fut.set_result(params)
                    self._waiters.remove((name, fut))

    def _note(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(
                "console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Runtime.exceptionThrown":
            d = params["exceptionDetails"]
            self.errors.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.errors.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False
    ) -> dict[str, Any]:
        i = next(self._ids)
        msg: dict[str, Any] = {"id": i, "method": method, "params": params or {}}
        if not browser:
            msg["sessionId"] = self.session
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[i] = fut
        await self.ws.send(json.dumps(msg))
        async with asyncio.timeout(30):
            return await fut

    async def goto(self, url: str) -> None:
        loaded: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append(("Page.loadEventFired", loaded))
        nav = await self.send("Page.navigate", {"url": url})
        assert "errorText" not in nav, nav
        async with asyncio.timeout(30):
            await loaded

    async def js(self, expression: str) -> Any:
        """The value of ``expression`` (awaited when it is a promise)."""
        r = await self.send(
            "Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True}
        )
        if "exceptionDetails" in r:
            raise CdpError(r["exceptionDetails"])
        return r["result"].get("value")

    async def screenshot(self, path: Path) -> bytes:
        height = await self.js("document.documentElement.scrollHeight")
        shot = await self.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": 1400, "height": height, "scale": 1},
            },
        )
        png = base64.b64decode(shot["data"])
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(path.write_bytes, png)
        return png


#: Resolves with the page's next settled state ("ready", "login", "error"), or its current one.
SETTLED = """new Promise((resolve) => {
  const s = document.body.dataset.state;
  if (s !== "loading") return resolve(s);
  window.addEventListener("dashboard:state", (e) => { if (e.detail.state !== "loading") resolve(e.detail.state); });
})"""

#: Everything the test reads off the page: tiles, the three time charts, the group table.
READ_PAGE = """(() => {
  const num = (v) => v === "" ? null : Number(v);
  const marks = (chart, tag) => [...document.querySelectorAll(`[data-chart=${chart}] g[data-series]`)].map((g) => ({
    series: g.dataset.series,
    points: [...g.querySelectorAll(tag)].map((m) => ({bucket: m.dataset.bucket, value: num(m.dataset.value)})),
  }));
  return {
    scope: document.getElementById("scope").textContent,
    kpis: Object.fromEntries([...document.querySelectorAll("[data-kpi]")].map((k) => [k.dataset.kpi, num(k.dataset.value)])),
    overTime: marks("over-time", "rect"),
    rates: marks("rates", "circle"),
    latency: marks("latency", "circle"),
    legend: [...document.querySelectorAll("#over-time-legend .item")].map((i) => i.dataset.series),
    rows: [...document.querySelectorAll("#group-table tbody tr")].map((tr) => Object.assign({key: tr.dataset.group},
      Object.fromEntries([...tr.querySelectorAll("td[data-col]")].map((td) => [td.dataset.col, num(td.dataset.value)])))),
    groupBars: [...document.querySelectorAll("[data-chart=groups] g[data-group]")].map((g) => g.dataset.group),
    filters: [...document.querySelectorAll("#filters .chip")].map((c) => c.dataset.filter),
  };
})()"""


# --- what the test's requests produced ------------------------------------------------------


def nearest_rank(values: list[float], p: float) -> float | None:
    v = sorted(values)
    return v[max(math.ceil(p / 100 * len(v)), 1) - 1] if v else None


def outcome(u: UsageRecorded) -> str:
    if u.status != "error":
        return u.status
    cls = ERRORS[u.error_code or "internal_error"]
    return "rejected" if cls.http_status < 500 or cls.code == "response_blocked" else "error"


def expected(
    records: list[UsageRecorded], group: Callable[[UsageRecorded], str] | None = None
) -> dict[str, Any]:
    """Totals of ``records`` (by ``group`` when given), as the dashboard must show them."""
    if group is not None:
        by: dict[str, list[UsageRecorded]] = defaultdict(list)
        for u in records:
            by[group(u)].append(u)
        return {k: expected(v) for k, v in by.items()}
    kinds = [outcome(u) for u in records]
    ok_ms = [u.total_ms for u in records if u.status == "ok" and u.total_ms is not None]
    n = len(records)
    return {
        "requests": n,
        "errors": kinds.count("error"),
        "rejected": kinds.count("rejected"),
        "total_tokens": sum(u.total_tokens for u in records),
        "cost_usd": round(sum(u.cost_usd for u in records), 9),
        "error_rate": kinds.count("error") / n,
        "rejection_rate": kinds.count("rejected") / n,
        "p50_ms": nearest_rank(ok_ms, 50),
        "p95_ms": nearest_rank(ok_ms, 95),
        "p99_ms": nearest_rank(ok_ms, 99),
        "ttft_p50_ms": nearest_rank(
            [u.ttft_ms for u in records if u.status == "ok" and u.ttft_ms is not None], 50
        ),
    }


def minute(u: UsageRecorded) -> str:
    t = u.occurred_at.timestamp()
    return datetime.fromtimestamp(t - t % 60, UTC).isoformat()


def close(a: float | None, b: float | None) -> bool:
    return a == b if a is None or b is None else math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


async def produce(settings: Any, tenant: str, user: str, calls: Callable[[GatewayClient], Any]) -> None:
    async with GatewayClient(
        settings.bootstrap_servers, tenant, user, topic_prefix=settings.topic_prefix, timeout_s=30
    ) as gw:
        await calls(gw)


HELLO = [{"role": "user", "content": "dashboard, count me"}]
NOT_A_PNG = "data:image/png;base64," + base64.b64encode(b"<!doctype html><html>oops</html>").decode()


async def demo_calls(gw: GatewayClient) -> None:
    for i in range(3):
        await gw.chat(
            model="demo-openai", messages=HELLO, api_key="dash-a", emulator_scenario=f"tokens={4 + i}"
        )
    await gw.chat(model="demo-anthropic", messages=HELLO, api_key="dash-b")
    async for _ in gw.stream_chat(model="demo-openai", messages=HELLO, api_key="dash-a"):
        pass
    with pytest.raises(GatewayError) as failed:
        await gw.chat(model="demo-openai", messages=HELLO, api_key="dash-b", emulator_scenario="status=500")
    assert failed.value.code == "provider_error"
    image = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is it"},
                {"type": "image_url", "image_url": {"url": NOT_A_PNG}},
            ],
        }
    ]
    with pytest.raises(GatewayError) as refused:
        await gw.chat(model="demo-openai", messages=image, api_key="dash-a")
    assert refused.value.code == "validation_error"


async def restricted_calls(gw: GatewayClient) -> None:
    for _ in range(2):
        await gw.chat(model="demo-openai", messages=HELLO)


# --- the test -------------------------------------------------------------------------------


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    async with Browser(tmp_path / "chromium") as b:
        yield b


async def test_the_dashboard_shows_what_the_requests_produced(stack, stack_settings, edge_url, browser):
    ours = {"demo": f"dash-{uuid.uuid4().hex[:8]}", "restricted": f"dash-{uuid.uuid4().hex[:8]}"}
    async with TopicTail(stack_settings.bootstrap_servers, f"{stack_settings.topic_prefix}llm.usage") as tail:
        await produce(stack_settings, "demo", ours["demo"], demo_calls)
        await produce(stack_settings, "restricted", ours["restricted"], restricted_calls)

        def mine(rs: list[Any]) -> list[UsageRecorded]:
            us = [UsageRecorded.model_validate_json(r.value) for r in rs if b'"dash-' in r.value]
            return [u for u in us if u.user_id in ours.values()]

        records = mine(await tail.until(lambda rs: len(mine(rs)) == 9))
    demo = [u for u in records if u.tenant_id == "demo"]
    want = expected(demo)
    assert (want["requests"], want["errors"], want["rejected"]) == (7, 1, 1)

    async with httpx.AsyncClient(base_url=edge_url, timeout=30) as http:
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}

        async def shown(user: str) -> int:
            r = await http.get(
                "/dashboard/data", params={"since": "1h", "fresh": "1", "user": user}, headers=admin
            )
            n: int = r.json()["totals"]["requests"]
            return n

        for user, n in ((ours["demo"], 7), (ours["restricted"], 2)):  # until the usage sink wrote them
            async with asyncio.timeout(60):
                while await shown(user) < n:
                    pass
        for headers in ({}, {"authorization": "Bearer sk-not-a-key"}):
            r = await http.get("/dashboard/data", headers=headers)
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        r = await http.get(
            "/dashboard/data?tenant=restricted", headers={"authorization": f"Bearer {DEMO_KEY}"}
        )
        assert r.status_code == 403

    runs = itertools.count()

    async def open_page(key: str, **query: str) -> dict[str, Any]:
        q = "&".join(f"{k}={v}" for k, v in {**query, "run": str(next(runs))}.items())
        await browser.goto(f"{edge_url}/dashboard?{q}#key={key}")
        assert await browser.js(SETTLED) == "ready"
        page: dict[str, Any] = await browser.js(READ_PAGE)
        return page

    # the admin key, one fresh user: every tile, chart and row holds exactly that user's numbers
    page = await open_page(ADMIN_KEY, since="1h", by="model", user=ours["demo"])
    assert page["scope"].startswith("admin") and page["filters"] == ["user"]
    for k in (
        "requests",
        "cost_usd",
        "total_tokens",
        "error_rate",
        "rejection_rate",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "ttft_p50_ms",
    ):
        assert close(page["kpis"][k], want[k]), (k, page["kpis"][k], want[k])
    by_model = expected(demo, lambda u: u.alias)
    assert set(page["legend"]) == set(by_model) == {"demo-openai", "demo-anthropic"}
    for s in page["overTime"]:
        assert close(sum(p["value"] for p in s["points"]), by_model[s["series"]]["cost_usd"]), s
    assert {r["key"] for r in page["rows"]} == set(by_model) == set(page["groupBars"])
    for row in page["rows"]:
        for col in ("requests", "errors", "rejected", "total_tokens", "cost_usd", "p50_ms", "p95_ms"):
            assert close(row[col], by_model[row["key"]][col]), (row, col)
    per_minute = expected(demo, minute)
    rates = {s["series"]: {p["bucket"]: p["value"] for p in s["points"]} for s in page["rates"]}
    assert rates["errors"] == {b: v["error_rate"] for b, v in per_minute.items()}
    assert rates["rejections"] == {b: v["rejection_rate"] for b, v in per_minute.items()}
    latency = {s["series"]: {p["bucket"]: p["value"] for p in s["points"]} for s in page["latency"]}
    assert latency["p50"] == {b: v["p50_ms"] for b, v in per_minute.items() if v["p50_ms"] is not None}

    # grouped by API key name, then a click on a legend entry filters to it
    page = await open_page(ADMIN_KEY, since="1h", by="key", user=ours["demo"])
    by_key = expected(demo, lambda u: u.api_key or "-")
    assert {r["key"]: r["requests"] for r in page["rows"]} == {k: v["requests"] for k, v in by_key.items()}
    state = await browser.js(
        """new Promise((resolve) => {
          window.addEventListener("dashboard:state", (e) => { if (e.detail.state !== "loading") resolve(e.detail.state); });
          document.querySelector('#over-time-legend [data-series="dash-b"]').click();
        })"""
    )
    page = await browser.js(READ_PAGE)
    assert state == "ready" and sorted(page["filters"]) == ["key", "user"]
    assert page["kpis"]["requests"] == by_key["dash-b"]["requests"] == 2
    assert close(page["kpis"]["error_rate"], 0.5)

    # the admin key sees both tenants; the demo key only its own, whatever it filters on
    page = await open_page(ADMIN_KEY, since="1h", by="tenant")
    assert {"demo", "restricted"} <= {r["key"] for r in page["rows"]}
    page = await open_page(DEMO_KEY, since="1h", by="tenant")
    assert page["scope"] == "tenant demo" and [r["key"] for r in page["rows"]] == ["demo"]
    page = await open_page(DEMO_KEY, since="1h", by="user", user=ours["restricted"])
    assert page["kpis"]["requests"] == 0 and page["rows"] == [] and page["overTime"] == []
    page = await open_page(DEMO_KEY, since="1h", by="user", user=ours["demo"])
    assert page["kpis"]["requests"] == 7 and close(page["kpis"]["cost_usd"], want["cost_usd"])

    # what a person sees: the whole session's traffic of the last hour, by model
    await open_page(ADMIN_KEY, since="1h", by="model")
    shot = ROOT / "bench" / "results" / f"dashboard-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.png"
    png = await browser.screenshot(shot)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
    assert browser.errors == [], browser.errors

    # a bad key: the page asks again, saying why (the 401 itself is logged by the browser)
    await browser.goto(f"{edge_url}/dashboard?run=bad#key=sk-not-a-key")
    assert await browser.js(SETTLED) == "login"
    assert "invalid API key" in await browser.js("document.getElementById('login-error').textContent")
    assert await browser.js("sessionStorage.length") == 0

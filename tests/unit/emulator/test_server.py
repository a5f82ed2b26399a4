"""The emulator under other uvicorn settings (h11 / asyncio loop) and as ``python -m services.emulator``."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import serve

ROOT = Path(__file__).resolve().parents[3]
BODY = {"messages": [{"role": "user", "content": "hi"}], "stream": True}


def test_drops_and_hangs_work_with_h11_and_asyncio():
    with serve(http="h11", loop="asyncio") as url, httpx.Client(base_url=url, timeout=5) as http:
        lines = []
        with (
            pytest.raises(httpx.RemoteProtocolError),
            http.stream(
                "POST", "/v1/chat/completions", json={"model": "m@tokens=5,disconnect_after=3", **BODY}
            ) as r,
        ):
            lines.extend(r.iter_lines())
        assert sum('"content":"' in x and '"role"' not in x for x in lines) == 3
        with pytest.raises(httpx.RemoteProtocolError):
            http.post("/v1/chat/completions", json={"model": "m@disconnect_after=0", "messages": []})
        with pytest.raises(httpx.ReadTimeout):
            http.post("/api/chat", json={"model": "m@hang=1", "messages": []}, timeout=0.2)
        assert http.get("/healthz").json() == {"status": "ok"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_module_entry_point():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.emulator", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, "emulator process exited"
                assert time.monotonic() < deadline, "emulator did not come up"
                time.sleep(0.05)
        assert r.json() == {"status": "ok"}
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "m@tokens=2", "messages": [{"role": "user", "content": "x"}]},
        )
        assert r.json()["choices"][0]["message"]["content"] == "tok0 tok1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)

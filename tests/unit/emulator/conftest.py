"""Starts one emulator (uvicorn, background thread, free port) for the whole session."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn

from services.emulator import create_app


@contextmanager
def serve(**config: Any) -> Iterator[str]:
    """Run a fresh emulator app under uvicorn in a thread; yields its base URL."""
    settings = {
        "host": "127.0.0.1",
        "port": 0,
        "log_level": "warning",
        "access_log": False,
        "timeout_graceful_shutdown": 2,
        **config,
    }
    server = uvicorn.Server(uvicorn.Config(create_app(), **settings))
    thread = threading.Thread(target=server.run, name="emulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("emulator did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def emulator_url() -> Iterator[str]:
    with serve() as url:
        yield url


@pytest.fixture
def unique_key() -> str:
    """A fresh ``fail_first`` counter key."""
    return uuid.uuid4().hex

"""The Model Registry port: the configuration's catalog, and an HTTP registry (a real local
server on 127.0.0.1) with validation, a TTL, the last good catalog kept while it is down; the
executor's targets resolved against it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
import yaml

from services.contracts.events import Deployment
from services.executor.targets import Targets
from services.runtime.config import ConfigError, GatewayConfig, load_config
from services.runtime.kafka import DeadLetter
from services.runtime.model_registry import (
    ConfigModelRegistry,
    HttpModelRegistry,
    RegistryError,
    model_registry,
    parse_catalog,
)

FILE = """
providers:
  p1: {kind: openai, base_url: "http://p1.invalid/v1", api_key_env: P1_KEY}
models:
  local: {deployments: [{provider: p1, model: up-local}]}
tenants: {t: {}}
"""
REMOTE = {
    "remote": {
        "routing": "cheapest",
        "capabilities": ["chat"],
        "deployments": [{"provider": "p1", "model": "up-remote", "price": {"input_per_mtok": 1.5}}],
    }
}


class Registry:
    """A model registry on 127.0.0.1: answers ``GET /models`` with ``status`` and ``body``."""

    def __init__(self) -> None:
        self.status = 200
        self.body = orjson.dumps({"models": REMOTE})
        self.gets = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                owner.gets += 1
                if self.path != "/models":
                    self.send_error(404)
                    return
                self.send_response(owner.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def answer(self, models: dict | None = None, *, status: int = 200, body: bytes | None = None) -> None:
        self.status = status
        self.body = body if body is not None else orjson.dumps({"models": models})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def registry_server() -> Iterator[Registry]:
    r = Registry()
    yield r
    r.close()


def config(**extra) -> GatewayConfig:
    return GatewayConfig.model_validate(yaml.safe_load(FILE) | extra)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_config_registry_is_the_files_models():
    cfg = config()
    r = model_registry(cfg)
    assert isinstance(r, ConfigModelRegistry) and r.catalog() is cfg.models and r.catalog() is r.catalog()


def test_parse_catalog_validates_each_entry(caplog):
    body = orjson.dumps(
        {
            "models": {
                **REMOTE,
                "typo": {"deployments": [{"provider": "p1", "model": "x"}], "routng": "cheapest"},
                "foreign": {"deployments": [{"provider": "evil", "model": "x"}]},
                "empty": {"deployments": []},
            }
        }
    )
    with caplog.at_level(logging.WARNING):
        models = parse_catalog(body, {"p1"})
    assert list(models) == ["remote"] and models["remote"].routing == "cheapest"
    assert (
        "'typo' skipped: routng" in caplog.text
        and "'foreign' skipped: unknown provider 'evil'" in caplog.text
    )
    assert "'empty' skipped" in caplog.text
    for bad in (b"<html>", b"[]", b'{"models": []}', b'{"other": {}}'):
        with pytest.raises(RegistryError):
            parse_catalog(bad, {"p1"})


def test_configured_http_registry_is_read_at_start(registry_server):
    cfg = config(model_registry={"url": registry_server.url, "cache_ttl_s": 30})
    r = model_registry(cfg)
    assert isinstance(r, HttpModelRegistry) and r.cache_ttl_s == 30
    assert list(r.catalog()) == ["remote"] and registry_server.gets == 1


def test_before_the_first_good_read_the_files_models_serve(registry_server):
    registry_server.answer(status=503, body=b"down")
    cfg = config(model_registry={"url": registry_server.url})
    assert list(model_registry(cfg).catalog()) == ["local"]


async def test_ttl_refresh_in_the_background_and_last_good_kept(registry_server, caplog):
    clock = Clock()
    r = HttpModelRegistry(registry_server.url, providers={"p1"}, cache_ttl_s=60, clock=clock)
    assert await r.refresh()
    first = r.catalog()
    assert list(first) == ["remote"] and r.reading is None
    # within the TTL: no read, the same object
    clock.t += 59
    assert r.catalog() is first and r.reading is None and registry_server.gets == 1
    # past it: one background read; unchanged content keeps the object
    clock.t += 2
    assert r.catalog() is first and r.reading is not None
    assert r.catalog() is first  # a second look does not start a second read
    assert await r.reading is True and r.catalog() is first and registry_server.gets == 2
    # a change: a new object
    registry_server.answer({**REMOTE, "added": {"deployments": [{"provider": "p1", "model": "new"}]}})
    clock.t += 61
    r.catalog()
    await r.reading
    changed = r.catalog()
    assert changed is not first and sorted(changed) == ["added", "remote"]
    # the registry fails (an error status, junk, unreachable): the last good catalog stays
    for answer in ({"status": 500, "body": b"oops"}, {"body": b"not json"}):
        registry_server.answer(**answer)
        clock.t += 61
        r.catalog()
        assert await r.reading is False and r.catalog() is changed
    registry_server.close()
    with caplog.at_level(logging.WARNING):
        assert await r.refresh() is False
    assert r.catalog() is changed and "unreachable" in caplog.text
    await r.aclose()


def test_a_synchronous_look_past_the_ttl_keeps_what_it_has(registry_server):
    clock = Clock()
    r = HttpModelRegistry(registry_server.url, providers={"p1"}, cache_ttl_s=1, clock=clock, initial={})
    assert r.load() and list(r.catalog()) == ["remote"]
    clock.t += 5
    assert list(r.catalog()) == ["remote"] and r.reading is None  # no loop: no background read


async def test_executor_targets_resolve_models_only_the_registry_knows(registry_server):
    clock = Clock()
    cfg = config(model_registry={"url": registry_server.url})
    r = HttpModelRegistry(
        registry_server.url, providers=cfg.providers, initial=cfg.models, cache_ttl_s=60, clock=clock
    )
    assert r.load()
    targets = Targets(cfg, r)
    t = targets.one(Deployment(alias="remote", provider="p1", upstream_model="up-remote"))
    assert (t.base_url, t.api_key_env, t.price.input_per_mtok) == ("http://p1.invalid/v1", "P1_KEY", 1.5)
    assert targets.one(Deployment(alias="remote", provider="p1", upstream_model="up-remote")) is t  # memoised
    with pytest.raises(DeadLetter, match="local/p1/up-local"):  # the registry's catalog replaced the file's
        targets.one(Deployment(alias="local", provider="p1", upstream_model="up-local"))
    # the catalog changes: the memo is dropped, the new price is used, a removed deployment is refused
    registry_server.answer(
        {
            "remote": {
                "deployments": [{"provider": "p1", "model": "up-remote", "price": {"input_per_mtok": 9.0}}]
            },
            "other": {"deployments": [{"provider": "p1", "model": "o"}]},
        }
    )
    clock.t += 61
    targets.registry.catalog()
    await r.reading
    t2 = targets.one(Deployment(alias="remote", provider="p1", upstream_model="up-remote"))
    assert t2 is not t and t2.price.input_per_mtok == 9.0
    registry_server.answer({"other": {"deployments": [{"provider": "p1", "model": "o"}]}})
    clock.t += 61
    targets.registry.catalog()
    await r.reading
    with pytest.raises(DeadLetter, match="remote/p1/up-remote"):
        targets.one(Deployment(alias="remote", provider="p1", upstream_model="up-remote"))
    # providers only ever come from the file: a registry entry naming another is never listed
    registry_server.answer({"x": {"deployments": [{"provider": "attacker", "model": "o"}]}})
    clock.t += 61
    targets.registry.catalog()
    await r.reading
    assert "x" not in r.catalog()


def test_model_registry_section(tmp_path):
    text = FILE.replace("tenants: {t: {}}", "tenants: {t: {allowed_models: [remote]}}")
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="tenants.t.allowed_models: unknown model 'remote'"):
        load_config(p, {})
    p.write_text(text + "model_registry: {url: 'http://127.0.0.1:1', cache_ttl_s: 5}\n")
    cfg = load_config(p, {})
    assert cfg.model_registry is not None and cfg.model_registry.cache_ttl_s == 5
    p.write_text(text + "model_registry: {url: 'http://x', cache_ttl_s: 0}\n")
    with pytest.raises(ConfigError, match="model_registry.cache_ttl_s"):
        load_config(p, {})

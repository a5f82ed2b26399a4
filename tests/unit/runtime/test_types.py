"""The Type Registry port: the GTS id grammar, the directory registry (the demo's own types),
the HTTP registry against a real local server (its cache and TTL, unknown ids, an unreachable
registry), and the ``types:`` configuration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.cli.infra import free_port
from services.runtime.config import ConfigError, TypesConfig, load_config
from services.runtime.settings import ROOT
from services.runtime.types import (
    DirectoryTypeRegistry,
    EmptyTypeRegistry,
    HttpTypeRegistry,
    TypeRegistryUnavailable,
    UnknownType,
    is_gts_id,
    type_registry,
)

WEATHER = "gts.llmgw.demo.tools.get_weather.v1~"
DEMO_TYPES = ROOT / "config" / "types"


@pytest.mark.parametrize(
    "gts_id",
    [
        WEATHER,
        "gts.llmgw.demo.tools.get_weather.v1.0~",
        "gts.x.y.z.t.v0~",
        "gts.vendor_1.pkg2.ns_x.type_9.v10.23~",
    ],
)
def test_grammar_accepts(gts_id: str) -> None:
    assert is_gts_id(gts_id)


@pytest.mark.parametrize(
    "gts_id",
    [
        "gts.llmgw.demo.tools.get_weather.v1",  # no trailing ~
        "gts.llmgw.demo.get_weather.v1~",  # a segment missing
        "gts.llmgw.demo.tools.extra.get_weather.v1~",  # one too many
        "gts.llmgw.demo.tools.Get_weather.v1~",  # upper case
        "gts.llmgw.demo.tools.1weather.v1~",  # starts with a digit
        "gts.llmgw.demo.tools.get-weather.v1~",  # dash
        "gts.llmgw.demo.tools.get_weather.v01~",  # leading zero
        "gts.llmgw.demo.tools.get_weather.v1.01~",  # leading zero in MINOR
        "gts.llmgw.demo.tools.get_weather.v1.2.3~",  # patch level
        "gts.llmgw.demo.tools.get_weather.v~",
        "gts.llmgw.demo.tools.get_weather.v-1~",
        "gts.../../etc/passwd.v1~",
        "x" + WEATHER,
        WEATHER + "\n",
        "",
        None,
        42,
    ],
)
def test_grammar_refuses(gts_id: object) -> None:
    assert not is_gts_id(gts_id)


# --- directory -------------------------------------------------------------------------------------


async def test_demo_directory_holds_get_weather() -> None:
    schema = await DirectoryTypeRegistry(DEMO_TYPES).get(WEATHER)
    assert schema["$id"] == f"gts://{WEATHER}"
    assert schema["title"] == "get_weather" and schema["description"]
    assert schema["required"] == ["city"] and schema["properties"]["city"]["type"] == "string"
    assert schema["properties"]["unit"]["enum"] == ["celsius", "fahrenheit"]
    assert "unit" not in schema["required"]


def test_every_demo_type_file_is_named_by_its_id() -> None:
    files = sorted(DEMO_TYPES.glob("*.json"))
    assert files
    for f in files:
        gts_id = f.name.removesuffix(".json")
        assert is_gts_id(gts_id), f.name
        assert orjson.loads(f.read_bytes())["$id"] == f"gts://{gts_id}"


async def test_directory_unknown_and_malformed_ids(tmp_path: Path) -> None:
    reg = DirectoryTypeRegistry(tmp_path)
    (tmp_path.parent / "gts.a.b.c.d.v1~.json").write_bytes(b"{}")  # outside the directory
    with pytest.raises(UnknownType, match="gts.a.b.c.d.v1~ is not registered"):
        await reg.get("gts.a.b.c.d.v1~")
    with pytest.raises(UnknownType, match="is not a GTS type id"):
        await reg.get("../gts.a.b.c.d.v1~")


async def test_directory_caches_what_it_read_and_sees_files_added_later(tmp_path: Path) -> None:
    reg = DirectoryTypeRegistry(tmp_path)
    path = tmp_path / "gts.a.b.c.d.v1~.json"
    with pytest.raises(UnknownType):
        await reg.get("gts.a.b.c.d.v1~")
    path.write_bytes(orjson.dumps({"title": "first", "type": "object"}))
    assert (await reg.get("gts.a.b.c.d.v1~"))["title"] == "first"
    path.write_bytes(orjson.dumps({"title": "second", "type": "object"}))
    assert (await reg.get("gts.a.b.c.d.v1~"))["title"] == "first", "a type read once is kept"


async def test_directory_file_that_is_not_a_schema(tmp_path: Path) -> None:
    (tmp_path / "gts.a.b.c.d.v1~.json").write_bytes(b"[1, 2]")
    with pytest.raises(TypeRegistryUnavailable, match="not a JSON Schema object"):
        await DirectoryTypeRegistry(tmp_path).get("gts.a.b.c.d.v1~")


async def test_empty_registry_knows_nothing() -> None:
    with pytest.raises(UnknownType, match="no type registry is configured"):
        await EmptyTypeRegistry().get(WEATHER)


# --- HTTP ------------------------------------------------------------------------------------------


class Registry:
    """A local HTTP type registry: ``schemas`` by id, and the paths it was asked for."""

    def __init__(self) -> None:
        self.schemas: dict[str, object] = {}
        self.asked: list[str] = []
        app = web.Application()
        app.router.add_get("/reg/entities/{gts_id}", self._entity)
        self.server = TestServer(app, host="127.0.0.1")

    async def _entity(self, request: web.Request) -> web.Response:
        gts_id = request.match_info["gts_id"]
        self.asked.append(gts_id)
        if gts_id not in self.schemas:
            return web.json_response({"error": "not found"}, status=404)
        return web.Response(body=orjson.dumps(self.schemas[gts_id]), content_type="application/json")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/reg"


@pytest.fixture
async def registry() -> AsyncIterator[Registry]:
    r = Registry()
    await r.server.start_server()
    yield r
    await r.server.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_http_registry_reads_entities_and_caches_them_for_the_ttl(registry: Registry) -> None:
    registry.schemas[WEATHER] = {"title": "get_weather", "type": "object"}
    clock = Clock()
    reg = HttpTypeRegistry(registry.url + "/", cache_ttl_s=60, clock=clock)
    try:
        assert (await reg.get(WEATHER))["title"] == "get_weather"
        registry.schemas[WEATHER] = {"title": "get_weather_v2", "type": "object"}
        clock.now += 59
        assert (await reg.get(WEATHER))["title"] == "get_weather", "within the TTL: the cached answer"
        assert registry.asked == [WEATHER]
        clock.now += 2
        assert (await reg.get(WEATHER))["title"] == "get_weather_v2", "past the TTL: asked again"
        assert registry.asked == [WEATHER, WEATHER]
    finally:
        await reg.aclose()


async def test_http_registry_non_200_is_unknown_and_not_cached(registry: Registry) -> None:
    reg = HttpTypeRegistry(registry.url)
    try:
        with pytest.raises(UnknownType, match=r"not registered \(registry answered HTTP 404\)"):
            await reg.get(WEATHER)
        registry.schemas[WEATHER] = {"title": "get_weather"}
        assert (await reg.get(WEATHER))["title"] == "get_weather"
    finally:
        await reg.aclose()


async def test_http_registry_never_asks_for_a_malformed_id(registry: Registry) -> None:
    reg = HttpTypeRegistry(registry.url)
    try:
        with pytest.raises(UnknownType, match="is not a GTS type id"):
            await reg.get("gts.x.y.z.t.v1~/../../admin")
        assert registry.asked == []
    finally:
        await reg.aclose()


async def test_http_registry_body_that_is_not_a_schema(registry: Registry) -> None:
    registry.schemas[WEATHER] = ["not", "an", "object"]
    reg = HttpTypeRegistry(registry.url)
    try:
        with pytest.raises(TypeRegistryUnavailable, match="not a JSON Schema object"):
            await reg.get(WEATHER)
    finally:
        await reg.aclose()


async def test_unreachable_http_registry_is_unavailable_not_unknown() -> None:
    reg = HttpTypeRegistry(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    try:
        with pytest.raises(TypeRegistryUnavailable, match="unreachable"):
            await reg.get(WEATHER)
    finally:
        await reg.aclose()


# --- configuration ---------------------------------------------------------------------------------


def test_demo_config_points_at_its_types_directory() -> None:
    config = load_config(ROOT / "config" / "demo.yaml", env={})
    reg = type_registry(config.types, (ROOT / "config" / "demo.yaml").parent)
    assert isinstance(reg, DirectoryTypeRegistry) and reg.directory == DEMO_TYPES


def test_registry_choice_from_config(tmp_path: Path) -> None:
    assert isinstance(type_registry(TypesConfig(), tmp_path), EmptyTypeRegistry)
    assert type_registry(TypesConfig(dir="types"), tmp_path).directory == tmp_path / "types"  # type: ignore[attr-defined]
    assert type_registry(TypesConfig(dir="/abs/types"), tmp_path).directory == Path("/abs/types")  # type: ignore[attr-defined]
    http = type_registry(TypesConfig(url="http://reg.example/v1", cache_ttl_s=7), tmp_path)
    assert isinstance(http, HttpTypeRegistry) and (http.base_url, http.cache_ttl_s) == (
        "http://reg.example/v1",
        7,
    )


def test_types_section_is_strict(tmp_path: Path) -> None:
    base = "providers: {p: {kind: openai, base_url: http://x}}\nmodels: {m: {deployments: [{provider: p, model: u}]}}\n"
    path = tmp_path / "gw.yaml"
    path.write_text(base + "types: {dir: types, url: http://reg}\n")
    with pytest.raises(ConfigError, match="set dir or url, not both"):
        load_config(path, env={})
    path.write_text(base + "types: {directory: types}\n")
    with pytest.raises(ConfigError, match="types.directory"):
        load_config(path, env={})
    path.write_text(base)
    assert load_config(path, env={}).types == TypesConfig()

"""A third-party plugin, loaded by entry point: a throw-away distribution (its own ``pyproject.toml``
declaring ``llmgw.hooks``, ``llmgw.usage`` and ``llmgw.audit`` entry points) is pip-installed into a
temporary directory (``--no-deps``, offline: the package brings its own tiny PEP 517 backend), put
on ``sys.path``, and the gateway finds it by name: the configuration validates, the loader checks
each object against its role, and a router on the real broker runs the hook on a tenant's requests
(a modification reaches ``llm.exec``, a block answers ``request_blocked`` naming the rule).
Everything is removed afterwards."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from services.audit_sink.app import serve as serve_audit_sink
from services.client import GatewayClient
from services.contracts.errors import BudgetExceeded, RequestBlocked
from services.contracts.events import AuditRecorded, UsageRecorded
from services.router.app import Router
from services.runtime import entrypoints
from services.runtime.config import ConfigError, GatewayConfig, load_config
from services.runtime.entrypoints import AUDIT, HOOKS, USAGE, PluginError
from services.runtime.hooks import Hook, Modify, TenantHooks
from services.runtime.kafka import Publisher
from services.runtime.plugins import AuditPlugin, UsagePlugin
from services.runtime.s3 import MemoryObjectStore
from services.runtime.settings import Settings
from services.runtime.topics import Topics, apply_topics
from services.usage_sink.app import serve as serve_usage_sink
from tests.e2e.helpers import TopicTail

ROOT = Path(__file__).resolve().parents[2]

PLUGIN = '''
"""An organisation's own gateway plugins (a throw-away test package)."""
from services.runtime.hooks import ALLOW, Block, Hook, Modify
from services.runtime.plugins import NO_OPINION, BudgetVerdict

#: what the plugins were told, in order (the tests read them)
CHECKED, REPORTED, RECORDED, AUDITED = [], [], [], []


class ShoutHook(Hook):
    def __init__(self, stop: str = "stop-word"):
        self.stop = stop

    async def pre_call(self, request):
        if any(self.stop in (m.content or "") for m in request.messages):
            return Block("acme-stop", "the request holds the stop word")
        messages = [m.model_copy(update={"content": m.content.upper()}) for m in request.messages]
        return Modify(request.model_copy(update={"messages": messages}))


class Billing:
    def __init__(self, **options):
        self.options = options

    async def record(self, usage, position):
        RECORDED.append((usage.request_id, position.offset))

    async def check_budget(self, request, *, max_cost_usd):
        CHECKED.append((request.request_id, max_cost_usd))
        if request.user_id == "broke":
            return BudgetVerdict(False, remaining_usd=0.25, reason="acme billing: the account of broke is empty")
        return NO_OPINION

    async def report_usage(self, usage):
        REPORTED.append(usage.request_id)

    async def aclose(self):
        pass


class Archive:
    async def record(self, audit, position):
        AUDITED.append(audit.request_id)

    async def aclose(self):
        pass


class HalfAHook:
    async def pre_call(self, request):
        return ALLOW
'''

BACKEND = '''
"""A minimal PEP 517 backend: the wheel of one module and its entry points (no setuptools, no network)."""
import base64, hashlib, pathlib, zipfile

NAME, VERSION, MODULE = "{name}", "0.1", "{module}"


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    here = pathlib.Path(__file__).parent
    info = f"{{NAME}}-{{VERSION}}.dist-info"
    files = {{
        f"{{MODULE}}.py": (here / f"{{MODULE}}.py").read_bytes(),
        f"{{info}}/METADATA": f"Metadata-Version: 2.1\\nName: {{NAME}}\\nVersion: {{VERSION}}\\n".encode(),
        f"{{info}}/WHEEL": b"Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
        f"{{info}}/entry_points.txt": (here / "entry_points.txt").read_bytes(),
    }}
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{{path}},sha256={{digest}},{{len(data)}}")
    record.append(f"{{info}}/RECORD,,")
    files[f"{{info}}/RECORD"] = ("\\n".join(record) + "\\n").encode()
    wheel = f"{{NAME}}-{{VERSION}}-py3-none-any.whl"
    with zipfile.ZipFile(pathlib.Path(wheel_directory) / wheel, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    return wheel
'''


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Build and pip-install the package; yields its module name. Afterwards the directory leaves
    ``sys.path`` and is deleted, and the module is forgotten."""
    tag = uuid.uuid4().hex[:8]
    module, name = f"acme_llmgw_{tag}", f"acme_llmgw_plugins_{tag}"
    src = tmp_path_factory.mktemp("acme-src")
    (src / f"{module}.py").write_text(PLUGIN)
    (src / "_backend.py").write_text(BACKEND.format(name=name, module=module))
    (src / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = []
        build-backend = "_backend"
        backend-path = ["."]

        [project]
        name = "{name}"
        version = "0.1"
        """)
    )
    (src / "entry_points.txt").write_text(
        textwrap.dedent(f"""
        [llmgw.hooks]
        acme_shout = {module}:ShoutHook
        acme_half = {module}:HalfAHook
        acme_missing = {module}_gone:Nothing

        [llmgw.usage]
        acme_billing = {module}:Billing

        [llmgw.audit]
        acme_archive = {module}:Archive
        """)
    )
    site = tmp_path_factory.mktemp("acme-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(site),
            str(src),
        ],
        check=True,
        timeout=120,
    )
    assert "acme_shout" not in entrypoints.names(HOOKS)  # not before it is on the path
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    try:
        yield module
    finally:
        sys.path.remove(str(site))
        sys.modules.pop(module, None)
        importlib.invalidate_caches()
        assert "acme_shout" not in entrypoints.names(HOOKS)


CONFIG = """
providers:
  p: {kind: openai, base_url: "http://p.invalid/v1"}
models:
  m:
    deployments: [{provider: p, model: x, price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}]
    max_output_tokens: 1000
tenants:
  acme:
    hooks:
      - {name: acme_shout, stop: halt-now}
    plugins: {usage: acme_billing, audit: acme_archive}
"""


def test_the_loader_finds_builds_and_checks_entry_points(installed: str, tmp_path: Path) -> None:
    assert {"acme_shout", "acme_half", "acme_missing"} <= entrypoints.names(HOOKS)
    hook = entrypoints.create(HOOKS, "acme_shout", Hook, None, stop="x")
    assert type(hook).__module__ == installed and hook.stop == "x"  # type: ignore[attr-defined]
    billing = entrypoints.create(USAGE, "acme_billing", UsagePlugin, None, region="eu")
    assert billing.options == {"region": "eu"}  # type: ignore[attr-defined]
    entrypoints.create(AUDIT, "acme_archive", AuditPlugin)
    with pytest.raises(PluginError, match="'acme_half' is not a Hook: it lacks post_response"):
        entrypoints.create(HOOKS, "acme_half", Hook)
    with pytest.raises(
        PluginError, match=r"'acme_missing' \(.*_gone:Nothing\) could not be loaded: ModuleNotFoundError"
    ):
        entrypoints.create(HOOKS, "acme_missing", Hook)
    with pytest.raises(PluginError, match="acme_shout.*unexpected keyword argument 'colour'"):
        entrypoints.create(HOOKS, "acme_shout", Hook, None, colour="red")
    with pytest.raises(PluginError, match="no llmgw.usage plugin named 'acme_shout'"):
        entrypoints.create(USAGE, "acme_shout", UsagePlugin)

    path = tmp_path / "gw.yaml"
    path.write_text(CONFIG)
    config = load_config(path, env={})
    ((name, built),) = TenantHooks.from_config(config).pre("acme").pre  # type: ignore[union-attr]
    assert name == "acme_shout" and type(built).__name__ == "ShoutHook"
    path.write_text(CONFIG.replace("acme_shout, stop: halt-now", "acme_half"))
    with pytest.raises(ConfigError, match=r"tenants\.acme\.hooks\.0: .*is not a Hook"):
        TenantHooks.from_config(load_config(path, env={}))  # names check at load, the role at start


async def _stack_config(
    tmp_path: Path, text: str, kafka_bootstrap: str, topic_prefix: str
) -> tuple[GatewayConfig, Settings, Topics]:
    """The configuration ``text`` loaded, settings naming it, and the topics created."""
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    settings = Settings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix, config_path=path, request_log=False
    )
    topics = Topics.load(ROOT / "topics.yaml", topic_prefix)
    await apply_topics(kafka_bootstrap, topics)
    return load_config(path, env={}), settings, topics


async def test_a_router_runs_the_installed_hook(
    installed: str, tmp_path: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    config, settings, topics = await _stack_config(tmp_path, CONFIG, kafka_bootstrap, topic_prefix)
    router = Router(settings, config, topics)
    await router.start()
    try:
        async with (
            TopicTail(kafka_bootstrap, topics.exec.name) as plans,
            GatewayClient(kafka_bootstrap, "acme", "u1", topic_prefix=topic_prefix, timeout_s=30) as gw,
        ):
            with pytest.raises(RequestBlocked) as blocked:
                await gw.chat(model="m", messages=[{"role": "user", "content": "please halt-now"}])
            assert blocked.value.details["rule"] == "acme-stop"
            assert "rule 'acme-stop'" in blocked.value.message
            sent = gw.build_request("m", [{"role": "user", "content": "quiet words"}], stream=False)
            await gw.send(sent)
            recs = await plans.until(lambda rs: any(sent.request_id.encode() in r.value for r in rs))
        plan = next(orjson.loads(r.value) for r in recs if sent.request_id.encode() in r.value)
        assert plan["request"]["messages"][0]["content"] == "QUIET WORDS"
        assert isinstance(await router.hooks.pre("acme").pre[0][1].pre_call(sent), Modify)  # type: ignore[union-attr]
    finally:
        await router.aclose()


async def test_a_tenants_usage_plugin_answers_the_routers_budget_questions(
    installed: str, tmp_path: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """``check_budget`` refuses before anything runs (402 naming the plugin's reason); every
    usage record of the tenant reaches ``report_usage`` through the router's group."""
    plugin = sys.modules[installed]
    config, settings, topics = await _stack_config(tmp_path, CONFIG, kafka_bootstrap, topic_prefix)
    router = Router(settings, config, topics)
    await router.start()
    try:
        async with (
            TopicTail(kafka_bootstrap, topics.exec.name) as plans,
            GatewayClient(kafka_bootstrap, "acme", "broke", topic_prefix=topic_prefix, timeout_s=30) as broke,
            GatewayClient(kafka_bootstrap, "acme", "rich", topic_prefix=topic_prefix, timeout_s=30) as rich,
            Publisher(kafka_bootstrap) as pub,
        ):
            with pytest.raises(BudgetExceeded) as refused:
                await broke.chat(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=100)
            assert "acme billing: the account of broke is empty" in refused.value.message
            assert refused.value.details["remaining_usd"] == 0.25
            # priced as the router's own budgets are: prompt bound + max_tokens at the model's price
            (rid, cost) = plugin.CHECKED[-1]
            assert 100 * 2.0 / 1e6 < cost < 200 * 2.0 / 1e6
            sent = rich.build_request("m", [{"role": "user", "content": "fine"}], stream=False)
            await rich.send(sent)
            await plans.until(lambda rs: any(sent.request_id.encode() in r.value for r in rs))
            assert plugin.CHECKED[-1][0] == sent.request_id
            usage = UsageRecorded(
                request_id=sent.request_id,
                tenant_id="acme",
                user_id="rich",
                status="ok",
                alias="m",
                provider="p",
                model="x",
                prompt_tokens=3,
                completion_tokens=5,
                total_tokens=8,
                cost_usd=0.00001,
            )
            await (await pub.publish(topics.usage.name, usage, key="acme"))
            await wait_for(
                lambda: sent.request_id in plugin.REPORTED, what="report_usage of the usage record"
            )
            await router.aclose()  # commits what it read
            # usage arriving while no router runs: the next owner's rebuild reads past it and
            # reports it to the plugin from the group's committed offset
            later = usage.model_copy(update={"request_id": f"later-{uuid.uuid4().hex[:8]}"})
            await (await pub.publish(topics.usage.name, later, key="acme"))
            router = Router(settings, config, topics)
            await router.start()
            await wait_for(
                lambda: later.request_id in plugin.REPORTED, what="the unreported usage after a restart"
            )
    finally:
        await router.aclose()


async def test_the_sinks_hand_each_tenants_records_to_its_plugins(
    installed: str, tmp_path: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """Records of ``acme`` go to its entry-point plugins; another tenant's to the sink's S3 ledger."""
    plugin = sys.modules[installed]
    _, settings, topics = await _stack_config(
        tmp_path, CONFIG + "  other: {}\n", kafka_bootstrap, topic_prefix
    )
    usage_store, audit_store = MemoryObjectStore(), MemoryObjectStore()
    tasks = [
        asyncio.create_task(serve_usage_sink(settings, store=usage_store)),
        asyncio.create_task(serve_audit_sink(settings, store=audit_store)),
    ]
    try:
        async with Publisher(kafka_bootstrap) as pub:
            ids = {t: f"req-{t}-{uuid.uuid4().hex[:8]}" for t in ("acme", "other")}
            for tenant, rid in ids.items():
                common = {"request_id": rid, "tenant_id": tenant, "user_id": "u"}
                await (
                    await pub.publish(
                        topics.usage.name,
                        UsageRecorded(
                            **common, status="ok", alias="m", provider="p", model="x", total_tokens=2
                        ),
                        key=tenant,
                    )
                )
                await (
                    await pub.publish(
                        topics.audit.name,
                        AuditRecorded(**common, action="completed", actor="test"),
                        key=tenant,
                    )
                )

            async def stored(store: MemoryObjectStore, rid: str) -> bool:
                for key in await store.keys(""):
                    obj = await store.get(key)
                    if obj is not None and rid.encode() in obj.body:
                        return True
                return False

            await wait_for(
                lambda: ids["acme"] in [r for r, _ in plugin.RECORDED], what="acme usage at its plugin"
            )
            await wait_for(lambda: ids["acme"] in plugin.AUDITED, what="acme audit at its plugin")
            await wait_for_async(lambda: stored(usage_store, ids["other"]), what="other's usage in S3")
            await wait_for_async(lambda: stored(audit_store, ids["other"]), what="other's audit in S3")
            assert not await stored(usage_store, ids["acme"]) and not await stored(audit_store, ids["acme"])
            assert ids["other"] not in [r for r, _ in plugin.RECORDED] and ids["other"] not in plugin.AUDITED
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def wait_for(check, *, what: str, timeout: float = 30.0) -> None:
    async def ok() -> bool:
        return bool(check())

    await wait_for_async(ok, what=what, timeout=timeout)


async def wait_for_async(check, *, what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)

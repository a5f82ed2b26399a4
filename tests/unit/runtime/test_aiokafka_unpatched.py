"""No gateway code patches aiokafka: a process that imports the SDK (``services.client``), or
any of the services, keeps aiokafka's modules and classes as aiokafka defines them. Each check
runs in a fresh interpreter (what other tests imported or patched does not count): it imports
every aiokafka module, notes what each module and class holds, imports the gateway's code, and
names whatever changed."""

from __future__ import annotations

import json
import subprocess
import sys

from services.runtime.settings import ROOT

PROBE = """
import importlib, inspect, json, pkgutil, sys
import aiokafka

for info in pkgutil.walk_packages(aiokafka.__path__, "aiokafka."):
    try:
        importlib.import_module(info.name)
    except ImportError:  # an optional codec's library is missing
        pass

def held():
    out = {}
    for name, module in list(sys.modules.items()):
        if name == "aiokafka" or name.startswith("aiokafka."):
            for attr, value in vars(module).items():
                out[f"{name}.{attr}"] = id(value)
                if inspect.isclass(value) and value.__module__ == name:
                    for a, v in vars(value).items():
                        out[f"{name}.{attr}.{a}"] = id(v)
    return out

before = held()
{imports}
after = held()
print(json.dumps(sorted(k for k in before if after.get(k) != before[k])))
"""


def changed_by(*statements: str) -> list[str]:
    code = PROBE.replace("{imports}", "\n".join(statements))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_the_sdk_leaves_aiokafka_unpatched() -> None:
    assert changed_by("import services.client", "import services.runtime.kafka") == []


def test_importing_the_services_leaves_aiokafka_unpatched() -> None:
    services = ["router", "executor", "edge", "usage_sink", "audit_sink"]
    assert (
        changed_by(*(f"import services.{s}.app" for s in services), "import services.runtime.service") == []
    )


def test_the_probe_sees_a_patch() -> None:
    """The control: a method replaced after aiokafka was imported is reported."""
    assert changed_by(
        "import services.client",
        "from aiokafka.consumer.fetcher import Fetcher",
        "Fetcher._proc_fetch_request = lambda self, *a: None",
    ) == ["aiokafka.consumer.fetcher.Fetcher._proc_fetch_request"]

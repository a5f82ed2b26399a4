"""``Settings`` is the only reader of the environment (STYLE 15), and says clearly what it
could not read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from services.edge.settings import EdgeSettings
from services.emulator.settings import EmulatorSettings
from services.executor.settings import ExecutorSettings
from services.router.settings import RouterSettings
from services.runtime.config import ConfigError, load_config
from services.runtime.settings import Settings
from services.usage_sink.settings import SinkSettings

SERVICES = Path(__file__).resolve().parents[3] / "services"
#: The one module that reads ``os.environ``. Everything else takes ``Settings.env``, the
#: environment as read at start: the services' own settings, the config's ``${NAME}``s,
#: provider secrets.
READERS = {SERVICES / "runtime" / "settings.py"}
#: Modules that hand the environment on without reading it, and how many times they touch it:
#: ``llmgw up`` starts each process with its own environment (PATH, HOME, JAVA_HOME ...) plus
#: the process's variables; nothing in it configures the CLI.
HANDS_ON = {SERVICES / "cli" / "stack.py": 1}
ENV_NAMES = {"environ", "environb", "getenv", "getenvb"}


def env_reads(tree: ast.AST) -> list[int]:
    """Lines that touch ``os.environ`` / ``os.getenv`` (or import them from ``os``)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ENV_NAMES:
            if isinstance(node.value, ast.Name) and node.value.id in ("os", "posix"):
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "posix"):
            if any(a.name in ENV_NAMES for a in node.names):
                lines.append(node.lineno)
    return lines


def test_only_settings_reads_the_environment():
    found = []
    for path in sorted(SERVICES.rglob("*.py")):
        lines = env_reads(ast.parse(path.read_text(), str(path)))
        if path not in READERS and len(lines) != HANDS_ON.get(path, 0):
            found += [f"{path.relative_to(SERVICES.parent)}:{line}" for line in lines]
    assert found == [], "read the environment through Settings (services/runtime/settings.py)"


def test_the_check_sees_every_way_of_reading_it():
    code = "import os\nfrom os import getenv\nos.environ['A']\nos.getenv('B')\nos.environ.get('C')\n"
    assert env_reads(ast.parse(code)) == [2, 3, 4, 5]


def test_settings_keep_the_environment_they_read():
    s = Settings.from_env({"LLMGW_TOPIC_PREFIX": "t-", "OPENAI_API_KEY": "sk-1"})
    assert s.topic_prefix == "t-" and s.secret("OPENAI_API_KEY") == "sk-1" and s.secret("NOPE") is None
    assert "sk-1" not in repr(s)
    assert Settings().secret("OPENAI_API_KEY") is None  # built without an environment: none
    sink = SinkSettings.from_env(runtime=Settings.from_env({"LLMGW_USAGE_SINK_BATCH_RECORDS": "7"}))
    assert sink.batch_records == 7


def test_each_service_settings_read_the_process_environment():
    rt = Settings.from_env(
        {"LLMGW_MAX_IN_FLIGHT": "3", "LLMGW_PROVIDER_TRUST_ENV": "1", "LLMGW_EMULATOR_PORT": "8200"}
    )
    assert RouterSettings.of(rt).max_in_flight == 3 and RouterSettings.of(Settings()).max_in_flight == 512
    ex = ExecutorSettings.of(rt)
    assert ex.max_in_flight == 3 and ex.provider_trust_env and ex.runtime is rt
    assert EmulatorSettings.from_env(rt).port == 8200


def test_settings_name_the_variable_they_cannot_read():
    with pytest.raises(ValueError, match="LLMGW_EDGE_PORT must be a number, got 'x'"):
        Settings.from_env({"LLMGW_EDGE_PORT": "x"})
    with pytest.raises(ValueError, match="LLMGW_MAX_IN_FLIGHT must be > 0"):
        RouterSettings.from_env(env={"LLMGW_MAX_IN_FLIGHT": "0"})
    with pytest.raises(ValueError, match="LLMGW_OTEL_CONSOLE must be one of"):
        Settings.from_env({"LLMGW_OTEL_CONSOLE": "maybe"})
    with pytest.raises(ValueError, match="LLMGW_LOG_LEVEL must be one of DEBUG, INFO"):
        Settings.from_env({"LLMGW_LOG_LEVEL": "loud"})
    with pytest.raises(ValueError, match="LLMGW_EDGE_KEEPALIVE_S must be a number"):
        EdgeSettings.from_env({"LLMGW_EDGE_KEEPALIVE_S": "soon"})
    assert Settings.from_env({"LLMGW_LOG_LEVEL": "debug"}).log_level == "DEBUG"


def test_config_references_resolve_from_the_settings_environment(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "providers: {p: {kind: openai, base_url: '${P_URL}'}}\nmodels: {m: {deployments: [{provider: p, model: up}]}}"
    )
    s = Settings.from_env({"P_URL": "http://p:1/v1"})
    assert load_config(path, s.env).providers["p"].base_url == "http://p:1/v1"
    with pytest.raises(ConfigError, match="P_URL is referenced by the config but not set"):
        load_config(path, {})  # only the environment given is read

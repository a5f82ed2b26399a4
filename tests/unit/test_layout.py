"""The repository's shape: compose file, service skeletons, no cross-service imports."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["router", "executor", "edge", "emulator", "usage-sink", "audit-sink"]


def test_compose_parses_and_runs_every_service_like_llmgw_up():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    svcs = doc["services"]
    assert svcs["kafka"]["image"].startswith("apache/kafka:")
    assert svcs["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert svcs["minio"]["image"].startswith("minio/minio")
    assert svcs["topics"]["command"] == ["topics", "apply"]
    for name in SERVICES:
        assert svcs[name]["command"] == ["run", name], name


def test_every_service_has_the_same_skeleton():
    for name in ["router", "executor", "edge", "usage_sink", "audit_sink"]:
        for f in ["__init__.py", "__main__.py", "app.py", "handlers.py", "settings.py"]:
            assert (ROOT / "services" / name / f).exists(), f"services/{name}/{f}"
    for f in ["__init__.py", "__main__.py", "app.py", "settings.py"]:  # its handlers: one module per API
        assert (ROOT / "services" / "emulator" / f).exists(), f"services/emulator/{f}"


def test_services_never_import_each_other():
    owned = ["router", "executor", "edge", "emulator", "media_store", "usage_sink", "audit_sink"]
    for svc in owned:
        for path in (ROOT / "services" / svc).rglob("*.py"):
            text = path.read_text()
            for other in owned:
                if other != svc:
                    assert f"from services.{other}" not in text and f"import services.{other}" not in text, (
                        f"{path} imports services.{other}"
                    )

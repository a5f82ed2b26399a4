"""JSON Schema files in ``schemas/``, generated from the event models.

``write_schemas`` regenerates them (``llmgw schemas write``); ``check_schemas``
lists every file that is missing or differs, which a test turns into a failure.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import TypeAdapter

from .events import EVENT_SCHEMAS

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def rendered() -> dict[str, str]:
    out = {}
    for type_, model in EVENT_SCHEMAS.items():
        schema = TypeAdapter(model).json_schema(mode="validation")
        schema["$id"] = f"https://llmgw.dev/schemas/{type_}.json"
        out[f"{type_}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in rendered().items():
        path = directory / name
        path.write_text(text)
        paths.append(path)
    return paths


def check_schemas(directory: Path = SCHEMA_DIR) -> list[str]:
    drift = []
    for name, text in rendered().items():
        path = directory / name
        if not path.exists():
            drift.append(f"{path} is missing (run `llmgw schemas write`)")
        elif path.read_text() != text:
            drift.append(f"{path} differs from the models (run `llmgw schemas write`)")
    return drift

"""Emulator settings: where it listens. Built once at start (``__main__``) from the process
``Settings`` and the command line; nothing in the emulator reads the environment (STYLE 15)."""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.settings import Settings


@dataclass(frozen=True)
class EmulatorSettings:
    """* ``host``: the address it listens on (``--host``, default ``127.0.0.1``),
    * ``port``: its port (``--port``, else ``LLMGW_EMULATOR_PORT``, the one ``llmgw up`` gives
      the providers of ``config/demo.yaml``; default 8100)."""

    host: str = "127.0.0.1"
    port: int = 8100

    @classmethod
    def from_env(cls, runtime: Settings | None = None) -> EmulatorSettings:
        rt = runtime or Settings.from_env()
        return cls(port=rt.emulator_port)

"""``python -m services.emulator [--host H] [--port P]``: serve the emulator with uvicorn."""

from __future__ import annotations

import argparse

import uvicorn

from .app import create_app
from .settings import EmulatorSettings


def main(argv: list[str] | None = None) -> None:
    defaults = EmulatorSettings.from_env()
    parser = argparse.ArgumentParser(prog="python -m services.emulator", description=__doc__)
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port)
    args = parser.parse_args(argv)
    settings = EmulatorSettings(host=args.host, port=args.port)
    # timeout_graceful_shutdown: ``hang=1`` requests would otherwise keep Ctrl-C waiting for their clients.
    uvicorn.run(
        create_app(),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=3,
    )


if __name__ == "__main__":
    main()

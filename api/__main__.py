"""Gateway process entry: `python -m api --config JSON` (the launcher starts it)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from api.app import config_from_json, create_app


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] != "--config":
        raise SystemExit("usage: python -m api --config JSON")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_json(sys.argv[2])
    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="warning",
                timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()

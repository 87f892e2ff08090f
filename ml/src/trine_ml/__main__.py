"""Entry point: ``python -m trine_ml --host 127.0.0.1 --port 8101``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn
from pydantic import ValidationError

from trine_ml.app import create_app
from trine_ml.logs import configure_logging, log_invalid_settings
from trine_ml.settings import Settings

logger = logging.getLogger("trine_ml")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="trine_ml", description="trine's internal ML service")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8101)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    # Everything this service loads is local; make any hub client refuse the network too.
    os.environ["HF_HUB_OFFLINE"] = "1"
    configure_logging(os.environ.get("TRINE_LOG_LEVEL", "INFO").upper())
    try:
        settings = Settings()  # type: ignore[call-arg]  # fields come from the environment
    except ValidationError as exc:
        log_invalid_settings(logger, exc)
        return 2
    logging.getLogger().setLevel(settings.log_level)
    config = uvicorn.Config(
        create_app(settings),
        host=args.host,
        port=args.port,
        workers=1,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    server.run()
    # uvicorn returns normally even when startup (e.g. model loading) failed.
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())

"""``python -m app [--host H] [--port P]``: start Tandem with uvicorn."""

import argparse
import os
import sys

import uvicorn

from app.config import ConfigError, Settings
from app.examples import EXAMPLES
from app.server import create_app
from app.telemetry.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    json_lines = os.environ.get("TANDEM_LOG_FORMAT", "text").strip().lower() == "json"
    configure_logging(args.log_level, json_lines)
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"tandem: cannot start: {error}", file=sys.stderr)
        return 2
    print(banner(settings, args.host, args.port), flush=True)
    # log_config=None: uvicorn's loggers keep ours (plain text or JSON lines).
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=None,
    )
    return 0


def banner(settings: Settings, host: str, port: int) -> str:
    url = f"http://{host}:{port}"
    lines = [f"Tandem listening on {url}  (OpenAPI: {url}/schema)"]
    if settings.embedded:
        lines += [
            "",
            "!" * 78,
            "!! EMBEDDED IN-MEMORY STORE (mongomock): every workflow and run is LOST on exit.",
            "!! Set MONGODB_URI to keep data in a real MongoDB.",
            "!" * 78,
        ]
    if settings.dev_key is not None:
        booking = EXAMPLES["booking"]
        lines += [
            "",
            f"Dev API key (tenant 'dev', new at every start): {settings.dev_key}",
            "",
            "Try the bundled booking workflow (README.md walks through the whole conversation):",
            f"  export TANDEM_URL={url} TANDEM_KEY={settings.dev_key}",
            f"  curl -s -X POST $TANDEM_URL/v1/workflows/{booking}/execute \\",
            "       -H \"X-API-Key: $TANDEM_KEY\" -H 'Content-Type: application/json' -d '{}'",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

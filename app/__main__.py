"""``python -m app [--host H] [--port P]``: start Tandem with uvicorn.

``python -m app publish FILE`` and ``python -m app chat WORKFLOW_ID`` talk to a running
server instead (app.cli)."""

import argparse
import logging
import sys

import uvicorn

from app.config import ConfigError, Settings
from app.examples import EXAMPLES
from app.server import create_app


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments and arguments[0] in ("publish", "chat"):
        from app.cli import run_command  # the client side: none of the server is needed

        return run_command(arguments)
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"tandem: cannot start: {error}", file=sys.stderr)
        return 2
    print(banner(settings, args.host, args.port), flush=True)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
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

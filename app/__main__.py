"""``python -m app [--host H] [--port P]``: start Tandem (see ``app.serving``).

``python -m app publish FILE`` and ``python -m app chat WORKFLOW_ID`` talk to a running
server instead (app.cli)."""

import argparse
import os
import sys

from app.config import ConfigError, Settings
from app.serving import serve
from app.telemetry.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments and arguments[0] in ("publish", "chat"):
        from app.cli import run_command  # the client side: none of the server is needed

        return run_command(arguments)
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    json_lines = os.environ.get("TANDEM_LOG_FORMAT", "text").strip().lower() == "json"
    configure_logging(args.log_level, json_lines)
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"tandem: cannot start: {error}", file=sys.stderr)
        return 2
    return serve(settings, args.host, args.port, args.log_level)


if __name__ == "__main__":
    sys.exit(main())

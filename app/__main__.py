"""``python -m app [--host H] [--port P]``: start Tandem (see ``app.serving``)."""

import argparse
import logging
import sys

from app.config import ConfigError, Settings
from app.serving import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"tandem: cannot start: {error}", file=sys.stderr)
        return 2
    return serve(settings, args.host, args.port, args.log_level)


if __name__ == "__main__":
    sys.exit(main())

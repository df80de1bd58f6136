"""``python -m tests.mongo_double [--host H] [--port P]``: serve until SIGTERM or SIGINT.

Prints the port it listens on (useful with ``--port 0``) as the only line on stdout;
logs go to stderr.
"""

import argparse
import asyncio
import logging
import signal

from tests.mongo_double.server import serve


async def main(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    await serve(host, port, stop, lambda listening: print(listening, flush=True))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.mongo_double", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (the default): any free port")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main(arguments.host, arguments.port))

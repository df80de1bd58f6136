"""``python -m tests.mongo_double [--host H] [--port P]``: serve until SIGTERM or SIGINT.

Prints the port it listens on (useful with ``--port 0``) as the only line on stdout;
logs go to stderr.
"""

import argparse
import asyncio
import logging
import signal

from app.garbage_collection import tune_garbage_collection
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
    # Tuned as the server is: its mongomock store grows in this heap as the embedded one
    # does, and full collections walking all of it paused every answer (a benchmark's
    # driver p99 went from about 64 ms to 28 ms, and the double's CPU a turn by a sixth).
    tune_garbage_collection()
    asyncio.run(main(arguments.host, arguments.port))

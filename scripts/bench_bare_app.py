"""The bare baseline of ``scripts/bench.py``: Litestar and uvicorn doing a JSON POST, nothing else.

One ``POST /turn`` handler decodes a small JSON body shaped like a Tandem turn into a
msgspec Struct and answers a small JSON object, so that what a Tandem turn costs beyond
it is the workflow, the store and Tandem's own HTTP layer (authentication, error
mapping, event encoding), not the framework or the server.

    .venv/bin/python scripts/bench_bare_app.py [--host H] [--port P] [--log-level L]

It starts uvicorn exactly as ``python -m app`` does (``app/__main__.py``): one worker,
uvicorn's defaults for the loop and the HTTP parser (``auto``: uvloop and httptools when
installed) and for the access log, and the same ``--log-level``. It imports nothing of
Tandem, so that Tandem's modules do not weigh on its garbage collector.
"""

import argparse
import logging

import msgspec
import uvicorn
from litestar import Litestar, post


class RunInput(msgspec.Struct):
    message: str | None = None


class TurnRequest(msgspec.Struct):
    run_id: str | None = None
    run_input: RunInput | None = None


class TurnAnswer(msgspec.Struct):
    run_id: str
    status: str
    turn: int


@post("/turn", status_code=200)
async def turn(data: TurnRequest) -> TurnAnswer:
    """Answers what a turn's answer begins with; Tandem answers ``200`` to a turn too."""
    return TurnAnswer(run_id=data.run_id or "6b03022fd5846d70db881d63", status="ok", turn=1)


def create_app() -> Litestar:
    return Litestar(route_handlers=[turn], debug=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    # As app/__main__.py: the same logging set-up and the same uvicorn.run arguments.
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()

"""Tandem's command line for a running server: ``python -m app publish FILE`` and
``python -m app chat WORKFLOW_ID``. The server is named by ``TANDEM_URL`` and the key by
``TANDEM_KEY``, the variables the server's start-up banner exports."""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from app.cli.chat import EXIT_INTERRUPTED, chat, terminal_reader
from app.cli.connection import DEFAULT_URL, KEY_VARIABLE, URL_VARIABLE, CliError, Tandem
from app.cli.publish import describe, publish

COMMANDS = ("publish", "chat")
_CONNECTION_HELP = (
    f"The server is {URL_VARIABLE} (default {DEFAULT_URL}) and the API key {KEY_VARIABLE}: the "
    "variables the server's start-up banner exports."
)


def run_command(argv: list[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run one of ``COMMANDS`` (``argv[0]``); its exit status. Failures are one
    ``tandem: ...`` message on ``err``, never a traceback."""
    args = _parser().parse_args(argv)
    try:
        tandem = Tandem.from_environment(args.url, args.key)
        try:
            if args.command == "publish":
                published = publish(
                    tandem,
                    Path(args.file),
                    workflow_id=args.workflow_id,
                    name=args.name,
                    description=args.description,
                )
                out.write(
                    f"{published.workflow_id}\n" if args.quiet else describe(published) + "\n"
                )
                return 0
            return chat(
                tandem,
                args.workflow_id,
                read_line=terminal_reader(out=out),
                out=out,
                inputs=dict(args.input),
                version=args.version,
                run_id=args.run,
            )
        finally:
            tandem.close()
    except CliError as error:
        out.flush()
        err.write(f"tandem: {error}\n")
        return 1
    except KeyboardInterrupt:  # outside a conversation (which stops its run itself)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of the output went away (`| head`): end quietly, and keep Python
        # from failing again when it flushes stdout at exit.
        if out is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _parser() -> argparse.ArgumentParser:
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--url", help=f"the server (default: ${URL_VARIABLE})")
    connection.add_argument("--key", help=f"the API key (default: ${KEY_VARIABLE})")
    parser = argparse.ArgumentParser(prog="python -m app", epilog=_CONNECTION_HELP)
    commands = parser.add_subparsers(dest="command", required=True)

    publishing = commands.add_parser(
        "publish",
        parents=[connection],
        help="create a workflow from a JSON or YAML file, or publish its next version",
        description=(
            "Create a workflow from FILE (JSON, or YAML for .yaml/.yml), and print its id and "
            "version. FILE holds a definition ({start, nodes}) or {name, description, "
            "definition}. With --workflow-id, or a workflow_id in the file, FILE becomes the "
            "next version of that workflow instead."
        ),
        epilog=_CONNECTION_HELP,
    )
    publishing.add_argument("file", metavar="FILE")
    publishing.add_argument("--workflow-id", help="publish FILE as this workflow's next version")
    publishing.add_argument(
        "--name", help="the new workflow's name (default: the file's, or its stem)"
    )
    publishing.add_argument("--description", help="the new workflow's description")
    publishing.add_argument("-q", "--quiet", action="store_true", help="print the id alone")

    chatting = commands.add_parser(
        "chat",
        parents=[connection],
        help="hold a conversation with a workflow on a running server",
        description=(
            "Start a run of WORKFLOW_ID (or continue one with --run) and answer it line by "
            "line: replies are shown as they are generated, a choice can be given by its "
            "number, an empty line continues a pause. Ctrl-C stops the run; the end of the "
            "input leaves it waiting. Exits 0 when the run completes."
        ),
        epilog=_CONNECTION_HELP,
    )
    chatting.add_argument("workflow_id", metavar="WORKFLOW_ID")
    chatting.add_argument("--version", type=int, help="the version to run (default: the latest)")
    chatting.add_argument(
        "--input",
        metavar="NAME=VALUE",
        type=_input,
        action="append",
        default=[],
        help="a variable for the first turn (VALUE as JSON, else as text); repeatable",
    )
    chatting.add_argument("--run", metavar="RUN_ID", help="continue this run instead")
    return parser


def _input(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    try:
        return name, json.loads(raw)
    except ValueError:
        return name, raw

"""Turning path, query and body values into the ids and requests the services take."""

import re
from typing import Any

from bson import ObjectId

from app.api.schemas import ExecuteRequest
from app.engine.compiler import RESERVED_NAMES
from app.engine.templating import EvaluationError, to_storable
from app.errors import ErrorItem, InvalidId, InvalidInput, UnknownCommand
from app.services.turns import TurnRequest

# Ids are written lowercase in answers; either case is accepted on the way in.
OBJECT_ID_PATTERN = "^[0-9a-fA-F]{24}$"
_OBJECT_ID = re.compile(OBJECT_ID_PATTERN)


def object_id(value: str, name: str) -> ObjectId:
    """A 24-hex-digit id, or a 400 that says what is wrong."""
    # fullmatch, not match: ``$`` alone also matches before a trailing newline.
    if not _OBJECT_ID.fullmatch(value):
        raise InvalidId(
            f"{name} must be 24 hexadecimal digits, not {value[:40]!r}.",
            errors=[ErrorItem(path=name, message="must be 24 hexadecimal digits")],
        )
    return ObjectId(value.lower())


def turn_request(body: ExecuteRequest | None, version: int | None) -> TurnRequest:
    """Check a turn's body: ids, command, and values MongoDB can store."""
    body = body or ExecuteRequest()
    run_input = body.run_input
    command = run_input.command if run_input else None
    if command is not None and command != "stop":
        raise UnknownCommand(
            f"Unknown command {command[:40]!r}: the only command is 'stop'.",
            errors=[ErrorItem(path="run_input.command", message="must be 'stop'")],
        )
    message = _storable(run_input.message, "run_input.message") if run_input else None
    inputs = _storable(body.inputs or {}, "inputs")
    reserved = RESERVED_NAMES.intersection(inputs)
    if reserved:
        name = sorted(reserved)[0]
        raise InvalidInput(
            f"inputs.{name} is reserved: templates see the conversation under that name.",
            errors=[ErrorItem(path=f"inputs.{name}", message="is reserved")],
        )
    return TurnRequest(
        run_id=object_id(body.run_id, "run_id") if body.run_id is not None else None,
        version=version,
        inputs=inputs,
        message=message,
        data=_storable(run_input.data, "run_input.data") if run_input else None,
        stop=command == "stop",
    )


def _storable(value: Any, path: str) -> Any:
    try:
        return to_storable(value)
    except EvaluationError as error:
        raise InvalidInput(
            f"{path} cannot be stored: {error}.", errors=[ErrorItem(path=path, message=str(error))]
        ) from None

"""Turning path, query and body values into the ids and requests the services take."""

import re
from datetime import datetime
from typing import Annotated, Any

import msgspec
from bson import ObjectId
from litestar import Request
from litestar.params import PathParameter, QueryParameter

from app.api.schemas import ID_DESCRIPTION, ID_PATTERN_IN, ExecuteRequest
from app.engine.compiler import RESERVED_NAMES
from app.engine.state import RunStatus
from app.engine.templating import INT64_MAX, MAX_VALUE_DEPTH, EvaluationError, to_storable
from app.errors import (
    DefinitionRejected,
    ErrorItem,
    InvalidId,
    InvalidInput,
    InvalidJson,
    InvalidParameter,
    TandemError,
    UnknownCommand,
)
from app.services.turn_model import TurnRequest

_OBJECT_ID = re.compile(ID_PATTERN_IN)

# Ids are documented with their pattern (schema_extra) but checked by object_id, which
# answers invalid_id. Numbers that reach a MongoDB query stop at 64 bits, beyond which
# BSON cannot encode them. Litestar documents a bound only when it is truthy, and
# sometimes as a float (2**63 - 1 becomes 2**63), so schema_extra repeats the bounds.
_VERSION_BOUNDS = {"minimum": 0, "maximum": INT64_MAX}
IdPath = Annotated[
    str, PathParameter(description=ID_DESCRIPTION, schema_extra={"pattern": ID_PATTERN_IN})
]
VersionPath = Annotated[int, PathParameter(ge=0, le=INT64_MAX, schema_extra=_VERSION_BOUNDS)]
VersionQuery = Annotated[
    int | None,
    QueryParameter(
        ge=0,
        le=INT64_MAX,
        schema_extra=_VERSION_BOUNDS,
        description="The version a new run pins (default: the latest); ignored on later turns.",
    ),
]
TurnQuery = Annotated[
    int | None,
    QueryParameter(
        ge=1,
        le=INT64_MAX,
        schema_extra={"maximum": INT64_MAX},
        description="Only the events of this turn (1-based).",
    ),
]
LimitQuery = Annotated[int, QueryParameter(ge=1, le=100, description="At most this many items.")]
DEFAULT_LIMIT = 20  # the items of a listing's page when the request names no limit
CursorQuery = Annotated[
    str | None,
    QueryParameter(
        description="The next_cursor of the previous page.",
        schema_extra={"pattern": ID_PATTERN_IN},
    ),
]

WorkflowIdQuery = Annotated[
    str | None,
    QueryParameter(
        description="Only this workflow's runs. " + ID_DESCRIPTION,
        schema_extra={"pattern": ID_PATTERN_IN},
    ),
]
RunStatusQuery = Annotated[
    RunStatus | None,
    QueryParameter(
        description="Only runs with this status. `running`: a turn is executing now; any"
        " other: the status the run's last turn left, with no turn executing (a run waiting"
        " for input whose next turn is executing is `running`). A run is stored with its"
        " first turn executing, so `not_started` and `started` list nothing."
    ),
]
# Times are checked by ``moment`` (a 400 that names the parameter); documented as RFC 3339.
CreatedAfterQuery = Annotated[
    str | None,
    QueryParameter(
        description="Only runs created at or after this time (ISO 8601 with its offset:"
        " `2026-11-23T12:00:00Z`, `…+01:00`; write `+` as `%2B` in a URL).",
        schema_extra={"format": "date-time"},
    ),
]
CreatedBeforeQuery = Annotated[
    str | None,
    QueryParameter(
        description="Only runs created before this time (ISO 8601 with its offset).",
        schema_extra={"format": "date-time"},
    ),
]
_MOMENT = Annotated[datetime, msgspec.Meta(tz=True)]


def object_id(value: str, name: str) -> ObjectId:
    """A 24-hex-digit id, or a 400 that says what is wrong."""
    # fullmatch, not match: ``$`` alone also matches before a trailing newline.
    if not _OBJECT_ID.fullmatch(value):
        raise InvalidId(
            f"{name} must be 24 hexadecimal digits, not {value[:40]!r}.",
            errors=[ErrorItem(path=name, message="must be 24 hexadecimal digits")],
        )
    return ObjectId(value.lower())


def moment(value: str, name: str) -> datetime:
    """An ISO 8601 (RFC 3339) time with its offset, or a 400 that says what is wrong."""
    try:
        return msgspec.convert(value, _MOMENT)
    except msgspec.ValidationError:
        # A + that the URL did not encode arrives as a space.
        hint = " (a + in a URL must be written %2B)" if " " in value.strip() else ""
        raise InvalidParameter(
            f"{name} must be a time with its offset, like 2026-11-23T12:00:00Z, not"
            f" {value[:40]!r}{hint}.",
            errors=[ErrorItem(path=name, message="must be an ISO 8601 time with its offset")],
        ) from None


def turn_request(body: ExecuteRequest | None, version: int | None, source: str) -> TurnRequest:
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
        source=source,
    )


def _storable(value: Any, path: str) -> Any:
    try:
        return to_storable(value)
    except EvaluationError as error:
        raise InvalidInput(
            f"{path} cannot be stored: {error}.", errors=[ErrorItem(path=path, message=str(error))]
        ) from None


class JsonBodyRequest(Request[str, Any, Any]):
    """A request whose JSON body answers 400, never 500, when msgspec cannot decode it.

    msgspec raises ``UnicodeDecodeError`` for invalid UTF-8 inside a string, and
    ``RecursionError`` for nesting deeper than the interpreter's stack allows (some 900
    levels here); Litestar turns only ``msgspec.DecodeError`` into a 400.
    """

    async def json(self) -> Any:
        try:
            return await super().json()
        except UnicodeDecodeError:
            raise _not_utf8(await self.body()) from None
        except RecursionError:
            raise _too_deep(await self.body(), self._body_type()) from None

    def _body_type(self) -> Any:
        data = self.route_handler.parsed_fn_signature.parameters.get("data")
        return data.annotation if data is not None else Any


# Any JSON value nested this deep in a body is beyond MAX_VALUE_DEPTH in its own field,
# whichever field it is in.
_BODY_DEPTH_SCANNED = MAX_VALUE_DEPTH + 8
# Finding where a body that msgspec refused goes wrong is one pass over its tokens in
# Python, about 1 us each: past this many (some 50 ms), the answer names the body.
_MAX_TOKENS_SCANNED = 50_000
# A string (with its escapes), an opening, a closing, a comma or a colon.
_JSON_TOKEN = re.compile(rb'(")[^"\\]*(?:\\.[^"\\]*)*"|([\[{])|([\]}])|(,)|:')
_STRING, _OPENING, _CLOSING, _COMMA = 1, 2, 3, 4


def _not_utf8(body: bytes) -> InvalidJson:
    try:
        body.decode()
    except UnicodeDecodeError as error:
        path = _format_path(_path_at(body, offset=error.start)) or "body"
        message = f"is not valid UTF-8 (byte 0x{body[error.start]:02x})"
        return InvalidJson(
            f"The request body is not valid JSON: {path} {message}.",
            errors=[ErrorItem(path=path, message=message)],
        )
    return InvalidJson("The request body is not valid JSON: it is not valid UTF-8.")


def _too_deep(body: bytes, body_type: Any) -> TandemError:
    """The answer to a body too deep to decode, at the field that holds the deep value:
    the same answer as for a value nested a little beyond the limit."""
    fields, declared = _field_part(_path_at(body, depth=_BODY_DEPTH_SCANNED), body_type)
    path = _format_path(fields)
    message = f"the value is nested deeper than {MAX_VALUE_DEPTH} levels"
    if path == "definition" and declared:
        # Judged as a definition, as one nested a little beyond the limit is (422).
        return DefinitionRejected(
            f"The definition cannot be stored: {message}.",
            errors=[ErrorItem(path=path, message=message)],
        )
    if not path:
        return InvalidInput(
            f"The request body is nested deeper than {MAX_VALUE_DEPTH} levels.",
            errors=[ErrorItem(path="body", message=message)],
        )
    return InvalidInput(
        f"{path} cannot be stored: {message}.", errors=[ErrorItem(path=path, message=message)]
    )


def _path_at(body: bytes, *, offset: int = -1, depth: int = -1) -> list[Any]:
    """The keys and indexes leading to byte ``offset``, or to the first value nested
    deeper than ``depth``, in a body msgspec could not decode (so without decoding it)."""
    # One frame per open container: [is_object, its current key (None between keys) or index].
    frames: list[list[Any]] = []
    for count, token in enumerate(_JSON_TOKEN.finditer(body)):
        if count == _MAX_TOKENS_SCANNED or token.end() > offset >= 0:
            break
        kind = token.lastindex
        if kind == _OPENING:
            is_object = token.group() == b"{"
            frames.append([is_object, None if is_object else 0])
            if len(frames) > depth >= 0:
                break
        elif kind == _CLOSING:
            if frames:
                frames.pop()
        elif kind == _COMMA:
            if frames:
                frame = frames[-1]
                frame[1] = None if frame[0] else frame[1] + 1
        elif kind == _STRING and frames and frames[-1][0] and frames[-1][1] is None:
            frames[-1][1] = _key(token.group())
    else:
        return []
    if count == _MAX_TOKENS_SCANNED:
        return []
    path = []
    for _, key in frames:
        if key is None:
            break
        path.append(key)
    return path


def _key(token: bytes) -> str:
    try:
        return msgspec.json.decode(token, type=str)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return token[1:-1].decode(errors="replace")


def _field_part(path: list[Any], body_type: Any) -> tuple[list[Any], bool]:
    """The start of ``path`` that names fields of the request's Structs (with the first
    undeclared one, if any), and whether its last field is declared: a free-form value
    is reported at the field that holds it."""
    named: list[Any] = []
    info = msgspec.inspect.type_info(body_type)
    for component in path:
        struct = _struct_in(info)
        if struct is None or not isinstance(component, str):
            break
        named.append(component)
        field = next((f for f in struct.fields if f.encode_name == component), None)
        if field is None:
            return named, False
        info = field.type
    return named, True


def _struct_in(info: msgspec.inspect.Type) -> msgspec.inspect.StructType | None:
    if isinstance(info, msgspec.inspect.UnionType):
        return next((t for t in info.types if isinstance(t, msgspec.inspect.StructType)), None)
    return info if isinstance(info, msgspec.inspect.StructType) else None


def _format_path(path: list[Any]) -> str:
    text = ""
    for component in path:
        text += f"[{component}]" if isinstance(component, int) else f".{component}"
    return text.lstrip(".")

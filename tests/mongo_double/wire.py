"""The MongoDB wire protocol's framing: requests read from bytes, replies written as bytes.

Every message starts with a 16-byte header (length, requestID, responseTo, opCode; little
endian). Requests come as OP_MSG (a command document, plus document sequences for bulk
fields such as ``documents``) or, from older drivers' first handshake, as a legacy OP_QUERY
on ``<db>.$cmd``; each is answered in kind, OP_MSG with OP_MSG and OP_QUERY with OP_REPLY.
"""

import struct
from dataclasses import dataclass
from typing import Any

import bson
import bson.errors

HEADER = struct.Struct("<iiii")  # messageLength, requestID, responseTo, opCode
OP_REPLY = 1
OP_QUERY = 2004
OP_MSG = 2013

CHECKSUM_PRESENT = 1  # OP_MSG flag bits
MORE_TO_COME = 1 << 1

MAX_MESSAGE_SIZE = 48_000_000  # as a mongod advertises in hello's maxMessageSizeBytes

_INT32 = struct.Struct("<i")
_UINT32 = struct.Struct("<I")
_REPLY_FIELDS = struct.Struct("<iqii")  # responseFlags, cursorID, startingFrom, numberReturned


class ProtocolError(Exception):
    """A message the double cannot read; the connection is closed, as mongod does."""


@dataclass
class Request:
    """One command sent to the double: where to answer, and whether to answer at all."""

    request_id: int
    op_code: int
    database: str
    command: dict[str, Any]
    expects_reply: bool = True  # False for OP_MSG with moreToCome (an unacknowledged write)


def parse_request(request_id: int, op_code: int, body: bytes) -> Request:
    """A request from the bytes after its header."""
    if op_code not in (OP_MSG, OP_QUERY):
        raise ProtocolError(f"opcode {op_code} is not supported (only OP_MSG and OP_QUERY)")
    try:
        if op_code == OP_MSG:
            return _parse_op_msg(request_id, body)
        return _parse_op_query(request_id, body)
    except (bson.errors.InvalidBSON, struct.error, ValueError, IndexError) as error:
        raise ProtocolError(f"a malformed message: {error!r}") from error


def _parse_op_msg(request_id: int, body: bytes) -> Request:
    (flags,) = _UINT32.unpack_from(body, 0)
    end = len(body) - (4 if flags & CHECKSUM_PRESENT else 0)  # the CRC-32C is not checked
    position = 4
    command: dict[str, Any] | None = None
    sequences: dict[str, list[Any]] = {}
    while position < end:
        kind = body[position]
        position += 1
        (size,) = _INT32.unpack_from(body, position)
        if kind == 0:
            command = bson.decode(body[position : position + size])
        elif kind == 1:
            # A document sequence: a field of the command (``documents``, ``updates``...)
            # sent as concatenated documents after a name.
            name_end = body.index(b"\x00", position + 4)
            name = body[position + 4 : name_end].decode()
            documents = bson.decode_all(body[name_end + 1 : position + size])
            sequences.setdefault(name, []).extend(documents)
        else:
            raise ProtocolError(f"OP_MSG section kind {kind} is not supported")
        position += size
    if command is None:
        raise ProtocolError("OP_MSG without a command document")
    command.update(sequences)
    database = command.get("$db")
    if not isinstance(database, str):
        raise ProtocolError("OP_MSG command without $db")
    return Request(request_id, OP_MSG, database, command, not flags & MORE_TO_COME)


def _parse_op_query(request_id: int, body: bytes) -> Request:
    name_end = body.index(b"\x00", 4)  # after flags: fullCollectionName, a C string
    namespace = body[4:name_end].decode()
    position = name_end + 1 + 8  # numberToSkip, numberToReturn
    (size,) = _INT32.unpack_from(body, position)
    query = bson.decode(body[position : position + size])
    database, _, collection = namespace.partition(".")
    if collection != "$cmd":
        raise ProtocolError(f"legacy OP_QUERY on {namespace} (only commands on <db>.$cmd)")
    if "$query" in query:  # the legacy wrapping that carries $readPreference beside it
        query = query["$query"]
    return Request(request_id, OP_QUERY, database, query)


def encode_reply(request: Request, reply_id: int, reply: dict[str, Any]) -> bytes:
    """The reply to ``request`` as bytes: OP_MSG to OP_MSG, OP_REPLY to OP_QUERY."""
    document = bson.encode(reply)
    if request.op_code == OP_MSG:
        body = _UINT32.pack(0) + b"\x00" + document  # no flags, one kind-0 section
        op_code = OP_MSG
    else:
        body = _REPLY_FIELDS.pack(0, 0, 0, 1) + document
        op_code = OP_REPLY
    return HEADER.pack(HEADER.size + len(body), reply_id, request.request_id, op_code) + body

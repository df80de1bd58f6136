"""Free-form JSON (variables, outputs, event data) stored as plain BSON that users can query.

MongoDB refuses, or cannot query, field names that start with ``$``, hold a ``.`` or a
NUL, and BSON has no integer wider than 64 bits. Everything else in JSON maps onto BSON
as it is, so only those few things are escaped, reversibly:

- in a key, ``%``, ``$``, ``.`` and NUL are written ``%25``, ``%24``, ``%2E``, ``%00``
  (percent-encoding, so ``%`` itself is escaped too); the empty key is written ``%``;
- an integer outside 64 bits becomes ``{"%int": "<decimal digits>"}``: no escaped key can
  be ``%int`` (an escape is always ``%`` and two hex digits), so this cannot be confused
  with a user's object.

A key like ``customer`` is stored as ``customer``: ``{"state.variables.customer":
"ACME"}`` finds runs about ACME. Values are returned as they are when nothing in them
needs escaping, without a copy.
"""

import re
from typing import Any

_KEY_NEEDS_ESCAPE = re.compile(r"[%$.\x00]")
_KEY_ESCAPED = re.compile(r"%[0-9A-F]{2}")
_ESCAPES = {"%": "%25", "$": "%24", ".": "%2E", "\x00": "%00"}
_BIG_INT = "%int"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def escape(value: Any) -> Any:
    """``value`` (any JSON value) as a BSON-storable value."""
    if isinstance(value, dict):
        return _escape_object(value)
    if isinstance(value, list):
        return _escape_array(value)
    if type(value) is int and not _INT64_MIN <= value <= _INT64_MAX:
        return {_BIG_INT: str(value)}
    return value


def unescape(value: Any) -> Any:
    """The JSON value that ``escape`` stored as ``value``."""
    if isinstance(value, dict):
        if len(value) == 1 and _BIG_INT in value:
            return int(value[_BIG_INT])
        return _unescape_object(value)
    if isinstance(value, list):
        return _unescape_array(value)
    return value


def _escape_object(value: dict[str, Any]) -> dict[str, Any]:
    changed: dict[str, Any] | None = None
    for index, (key, item) in enumerate(value.items()):
        stored_key = _escape_key(key) if (not key or _KEY_NEEDS_ESCAPE.search(key)) else key
        stored_item = escape(item)
        if changed is None and (stored_key is not key or stored_item is not item):
            changed = dict(list(value.items())[:index])
        if changed is not None:
            changed[stored_key] = stored_item
    return value if changed is None else changed


def _escape_array(value: list[Any]) -> list[Any]:
    changed: list[Any] | None = None
    for index, item in enumerate(value):
        stored = escape(item)
        if changed is None and stored is not item:
            changed = value[:index]
        if changed is not None:
            changed.append(stored)
    return value if changed is None else changed


def _unescape_object(value: dict[str, Any]) -> dict[str, Any]:
    changed: dict[str, Any] | None = None
    for index, (key, item) in enumerate(value.items()):
        json_key = _unescape_key(key) if "%" in key else key
        json_item = unescape(item)
        if changed is None and (json_key is not key or json_item is not item):
            changed = dict(list(value.items())[:index])
        if changed is not None:
            changed[json_key] = json_item
    return value if changed is None else changed


def _unescape_array(value: list[Any]) -> list[Any]:
    changed: list[Any] | None = None
    for index, item in enumerate(value):
        json_item = unescape(item)
        if changed is None and json_item is not item:
            changed = value[:index]
        if changed is not None:
            changed.append(json_item)
    return value if changed is None else changed


def _escape_key(key: str) -> str:
    if not key:
        return "%"
    return _KEY_NEEDS_ESCAPE.sub(lambda match: _ESCAPES[match.group()], key)


def _unescape_key(key: str) -> str:
    if key == "%":
        return ""
    return _KEY_ESCAPED.sub(lambda match: chr(int(match.group()[1:], 16)), key)

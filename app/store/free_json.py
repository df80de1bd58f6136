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
from collections.abc import Callable
from typing import Any

_KEY_NEEDS_ESCAPE = re.compile(r"[%$.\x00]")
_KEY_ESCAPED = re.compile(r"%[0-9A-F]{2}")
_ESCAPES = {"%": "%25", "$": "%24", ".": "%2E", "\x00": "%00"}
_BIG_INT = "%int"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


# Values that are stored as they are, whatever they hold.
_LEAVES = frozenset({str, float, bool, type(None)})


def escape(value: Any) -> Any:
    """``value`` (any JSON value) as a BSON-storable value."""
    # Nearly every value needs no escape: one look through it, building nothing, finds
    # that; only a value that does is mapped. Either way each part is visited at most
    # twice, however deep what needs escaping lies.
    return value if _plain(value) else _escaped(value)


def _plain(value: Any) -> bool:
    """Whether ``value`` is stored as it is: no key or integer in it needs escaping."""
    kind = type(value)
    if kind in _LEAVES:
        return True
    if kind is dict:
        search = _KEY_NEEDS_ESCAPE.search
        for key, item in value.items():
            if not key or search(key) or (type(item) not in _LEAVES and not _plain(item)):
                return False
        return True
    if kind is list:
        return all(type(item) in _LEAVES or _plain(item) for item in value)
    if kind is int:
        return bool(_INT64_MIN <= value <= _INT64_MAX)
    return False  # anything else is left to _escaped


def _escaped(value: Any) -> Any:
    if isinstance(value, dict):
        return _mapped_object(value, _stored_key, _escaped)
    if isinstance(value, list):
        return _mapped_array(value, _escaped)
    if type(value) is int and not _INT64_MIN <= value <= _INT64_MAX:
        return {_BIG_INT: str(value)}
    return value


def unescape(value: Any) -> Any:
    """The JSON value that ``escape`` stored as ``value``."""
    if isinstance(value, dict):
        if len(value) == 1 and _BIG_INT in value:
            return int(value[_BIG_INT])
        return _mapped_object(value, _json_key, unescape)
    if isinstance(value, list):
        return _mapped_array(value, unescape)
    return value


def _mapped_object(
    value: dict[str, Any], key_of: Callable[[str], str], item_of: Callable[[Any], Any]
) -> dict[str, Any]:
    """``value`` with each key and item mapped; ``value`` itself if none changed."""
    changed: dict[str, Any] | None = None
    for index, (key, item) in enumerate(value.items()):
        new_key, new_item = key_of(key), item_of(item)
        if changed is None and (new_key is not key or new_item is not item):
            changed = dict(list(value.items())[:index])
        if changed is not None:
            changed[new_key] = new_item
    return value if changed is None else changed


def _mapped_array(value: list[Any], item_of: Callable[[Any], Any]) -> list[Any]:
    """``value`` with each item mapped; ``value`` itself if none changed."""
    changed: list[Any] | None = None
    for index, item in enumerate(value):
        new_item = item_of(item)
        if changed is None and new_item is not item:
            changed = value[:index]
        if changed is not None:
            changed.append(new_item)
    return value if changed is None else changed


def _stored_key(key: str) -> str:
    return _escape_key(key) if not key or _KEY_NEEDS_ESCAPE.search(key) else key


def _json_key(key: str) -> str:
    return _unescape_key(key) if "%" in key else key


def _escape_key(key: str) -> str:
    if not key:
        return "%"
    return _KEY_NEEDS_ESCAPE.sub(lambda match: _ESCAPES[match.group()], key)


def _unescape_key(key: str) -> str:
    if key == "%":
        return ""
    return _KEY_ESCAPED.sub(lambda match: chr(int(match.group()[1:], 16)), key)

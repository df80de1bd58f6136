"""The embedded default: mongomock-motor, in memory, made fast where Tandem needs it.

mongomock answers every query by scanning the whole collection, so a turn would
slow down with every run ever stored. mongomock keeps documents in a mapping by
``_id``; an equality or ``$in`` filter on ``_id`` is answered from that mapping
here, and the rest of the filter is still applied, so results are exactly the same.

mongomock also copies every document it stores or returns with ``copy.deepcopy``, and
walks it twice more to mimic how MongoDB stores datetimes. With runs stored as plain
documents (variables, history and events as nested values), that was most of a turn's
time. The same copies and walks are done here by functions that know the types a BSON
document holds (dicts, lists and immutable leaves); anything else goes to mongomock's own.
"""

import copy
import types
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

_patched = False
_LEAVES = (str, int, float, bool, type(None), ObjectId, datetime, bytes)


def _identity(value: Any) -> Any:
    return value


_mongomock_as_stored: Callable[[Any], Any] = _identity


def open_embedded_client() -> Any:
    """A mongomock-motor client (timezone-aware, like the real one Tandem opens)."""
    from mongomock_motor import AsyncMongoMockClient

    answer_id_lookups_directly()
    return AsyncMongoMockClient(tz_aware=True)


def answer_id_lookups_directly() -> None:
    global _patched
    if _patched:
        return
    from mongomock import collection, filtering, helpers
    from mongomock.collection import Collection

    global _mongomock_as_stored
    collection_module: Any = collection
    helpers_module: Any = helpers
    _mongomock_as_stored = helpers_module.patch_datetime_awareness_in_document
    collection_module.copy = types.SimpleNamespace(deepcopy=_copy, copy=copy.copy)
    helpers_module.patch_datetime_awareness_in_document = _as_stored
    helpers_module.make_datetime_timezone_aware_in_document = _as_read
    copy_field = collection_module._copy_field

    def copy_returned(value: Any, container: type) -> Any:  # what a find returns
        return _copy(value) if container is dict else copy_field(value, container)

    collection_module._copy_field = copy_returned

    scan_all = Collection._iter_documents

    def iter_documents(self: Any, filter: Any) -> Iterator[dict[str, Any]]:
        wanted = filter.get("_id") if isinstance(filter, dict) else None
        if isinstance(wanted, dict) and wanted.keys() == {"$in"}:
            candidates = wanted["$in"]
        else:
            candidates = [wanted]
        if not all(_is_key(candidate) for candidate in candidates):
            return scan_all(self, filter)  # type: ignore[no-any-return, no-untyped-call]
        found = []
        for candidate in dict.fromkeys(candidates):  # each document once, as MongoDB answers
            try:
                document = self._store[candidate]
            except KeyError:
                continue
            if filtering.filter_applies(filter, document):  # type: ignore[no-untyped-call]
                found.append(document)
        return iter(found)

    Collection._iter_documents = iter_documents  # type: ignore[method-assign]
    _patched = True


def _is_key(value: Any) -> bool:
    return isinstance(value, ObjectId | str | int) and not isinstance(value, bool)


def _copy(value: Any, memo: Any = None) -> Any:
    """``copy.deepcopy`` for what a BSON document holds."""
    kind = type(value)
    if kind is dict:
        return {key: _copy(item) for key, item in value.items()}
    if kind is list:
        return [_copy(item) for item in value]
    if kind in _LEAVES:
        return value
    return copy.deepcopy(value)


def _as_stored(value: Any) -> Any:
    """A value as MongoDB stores it: datetimes naive UTC, to the millisecond (what
    mongomock's ``patch_datetime_awareness_in_document`` does)."""
    kind = type(value)
    if kind is dict:
        return {key: _as_stored(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_as_stored(item) for item in value]
    if kind is datetime:
        millisecond = (value.microsecond // 1000) * 1000
        offset = value.utcoffset()
        if offset is not None:
            return (value - offset).replace(tzinfo=None, microsecond=millisecond)
        return value.replace(microsecond=millisecond)
    if kind in _LEAVES:
        return value
    return _mongomock_as_stored(value)  # a subclass (SON, OrderedDict), a Timestamp


def _as_read(value: Any) -> Any:
    """A stored value as a timezone-aware client reads it: datetimes in UTC."""
    kind = type(value)
    if kind is dict:
        return {key: _as_read(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_as_read(item) for item in value]
    if kind is datetime:
        return value.replace(tzinfo=UTC)
    return value

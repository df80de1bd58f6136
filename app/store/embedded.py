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
import functools
import threading
import time
import types
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, cast

from bson import BSON, ObjectId

_patched = False
# Immutable values a BSON document holds: every walk returns them as they are, except
# datetimes, which ``_as_stored`` and ``_as_read`` change.
_KEPT = frozenset({str, int, float, bool, type(None), ObjectId, bytes})
_KEPT_BY_COPY = _KEPT | {datetime}


def _identity(value: Any) -> Any:
    return value


_mongomock_as_stored: Callable[[Any], Any] = _identity


def open_embedded_client() -> Any:
    """A mongomock-motor client (timezone-aware, like the real one Tandem opens)."""
    from mongomock_motor import AsyncMongoMockClient

    answer_id_lookups_directly()
    return AsyncMongoMockClient(tz_aware=True)


# mongomock looks for TTL-expired documents through the whole collection on every read:
# with a TTL index (runs, idempotency keys), each turn would cost as much as the store
# holds. MongoDB's own TTL monitor runs once a minute, and Tandem checks expiry in code
# anyway (retention, keys), so the embedded store looks as often, at the first read after
# a minute. (Once a second, a server under load spent 2.6% of its time and stalled 26 ms
# every second scanning 30,000 runs, and more as runs accumulated.)
TTL_SWEEP_SECONDS = 60.0


def _expire_at_most_every(seconds: float) -> None:
    from mongomock.store import CollectionStore

    store_class: Any = CollectionStore
    remove_expired = store_class._remove_expired_documents

    def remove_expired_now_and_then(self: Any) -> None:
        if not self._ttl_indexes:
            return
        now = time.monotonic()
        if now - getattr(self, "_tandem_expired_at", float("-inf")) < seconds:
            return
        self._tandem_expired_at = now
        remove_expired(self)

    store_class._remove_expired_documents = remove_expired_now_and_then


class _OneLock:
    """mongomock's readers-writer lock, as one reentrant lock.

    mongomock guards each collection with a lock written in Python (five lock calls
    and a generator per read), taken several times by every operation. Tandem calls
    mongomock from the event loop's thread only (mongomock-motor runs each call there,
    synchronously), so readers never wait for each other anyway; one ``RLock``, taken
    in C, still keeps out any other thread, and being reentrant it cannot deadlock a
    thread that writes while one of its own reads is open."""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def reader(self) -> Any:
        return self._lock

    def writer(self) -> Any:
        return self._lock


def answer_id_lookups_directly() -> None:
    global _patched
    if _patched:
        return
    from mongomock import collection, filtering, helpers, store
    from mongomock.collection import Collection
    from packaging import version

    global _mongomock_as_stored
    collection_module: Any = collection
    helpers_module: Any = helpers
    missing = cast(Any, filtering).NOTHING  # how mongomock's filters see a missing field
    _mongomock_as_stored = helpers_module.patch_datetime_awareness_in_document
    _expire_at_most_every(TTL_SWEEP_SECONDS)
    cast(Any, store).RWLock = _OneLock
    collection_module.copy = types.SimpleNamespace(deepcopy=_copy, copy=copy.copy)
    # mongomock parses a version string (``version.parse('4.0')``) on every call, several
    # times: the same few strings, parsed once here.
    collection_module.version = types.SimpleNamespace(
        parse=functools.lru_cache(maxsize=None)(version.parse)
    )
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
            matched = _matches(filter, document, missing)
            if matched is None:
                matched = filtering.filter_applies(filter, document)  # type: ignore[no-untyped-call]
            if matched:
                found.append(document)
        return iter(found)

    Collection._iter_documents = iter_documents  # type: ignore[method-assign]
    Collection._insert = _inserting_as_bson(Collection._insert, collection_module)  # type: ignore[method-assign]
    Collection._update = _updating_in_place(Collection._update, collection_module)  # type: ignore[method-assign]
    Collection.find_one_and_update = _finding_and_updating_at_once(  # type: ignore[method-assign]
        Collection.find_one_and_update, collection_module
    )
    _patched = True


def _inserting_as_bson(insert_anything: Any, collection_module: Any) -> Any:
    """mongomock's ``_insert`` for one plain document, storing what MongoDB would: the
    document encoded as BSON (which mongomock does anyway, to refuse what BSON cannot
    hold) and decoded again. The decoding, in C, is the deep copy with datetimes made
    naive UTC to the millisecond that mongomock otherwise makes in Python, walking
    every value; the archive of a turn's events was a tenth of a turn's time with it."""
    from mongomock import DuplicateKeyError, helpers

    def insert(self: Any, data: Any, session: Any = None, ordered: bool = True) -> Any:
        if session or type(data) is not dict:
            return insert_anything(self, data, session, ordered)
        for key in data:
            if not isinstance(key, str):
                raise ValueError("Document keys must be strings")
            if key.startswith("$"):  # as mongomock (and MongoDB) refuse it
                collection_module._validate_data_fields(data)
        # mongomock also looks for NUL in every key, walking the document in Python; the
        # encoding below refuses those, in lists too, as PyMongo does before sending.
        # As PyMongo, the caller's document gets its _id (mongomock fills it after the
        # encoding; before, the stored copy holds it too).
        if "_id" not in data:
            data["_id"] = ObjectId()
        stored = _as_stored_by_bson(data)
        object_id = data["_id"]
        if isinstance(object_id, dict):
            object_id = helpers.hashdict(object_id)
        if object_id in self._store:
            raise DuplicateKeyError("E11000 Duplicate Key Error", 11000)
        self._store[object_id] = stored
        try:
            self._ensure_uniques(stored)
        except DuplicateKeyError:
            del self._store[object_id]
            raise
        return data["_id"]

    insert.__wrapped__ = insert_anything  # type: ignore[attr-defined]
    return insert


# Update operators that change only the fields they name (and create none elsewhere).
_FIELD_OPERATORS = frozenset({"$set", "$unset", "$inc", "$max", "$min"})
_ABSENT = object()


def _updating_in_place(update_everywhere: Any, collection_module: Any) -> Any:
    """mongomock's ``Collection._update``, for the updates Tandem sends, with a smaller copy.

    mongomock copies the whole document before it applies an update to it, to tell
    whether the update changed it and to put it back if a unique index refuses the
    change. An update of one document by operators that change only the fields they
    name (``$set``, ``$inc``, ...; no upsert, no pipeline, ``_id`` left alone) can only
    change those fields: copying them alone tells and restores the same. Anything else
    is left to mongomock's own."""
    helpers = collection_module.helpers

    def update(
        self: Any,
        spec: Any,
        document: Any,
        upsert: bool = False,
        manipulate: bool = False,
        multi: bool = False,
        check_keys: bool = False,
        hint: Any = None,
        session: Any = None,
        collation: Any = None,
        let: Any = None,
        array_filters: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        named = _fields_named(document)
        if (
            named is None
            or "_id" in named
            or upsert
            or manipulate
            or multi
            or check_keys
            or hint
            or session
            or collation
            or let
            or array_filters
            or kwargs
        ):
            return update_everywhere(  # type: ignore[no-any-return]
                self,
                spec,
                document,
                upsert,
                manipulate,
                multi,
                check_keys,
                hint=hint,
                session=session,
                collation=collation,
                let=let,
                array_filters=array_filters,
                **kwargs,
            )
        spec = helpers.patch_datetime_awareness_in_document(spec)
        document = _as_stored_by_bson(document)
        collection_module.validate_is_mapping("spec", spec)
        matched = modified = 0
        for existing in self._iter_documents(spec):
            matched = 1
            modified = _update_in_place(self, existing, spec, document, named, collection_module)
            break
        return {
            "connectionId": self.database.client._id,
            "err": None,
            "n": matched,
            "nModified": modified,
            "ok": 1,
            "upserted": None,
            "updatedExisting": bool(matched),
        }

    update.__wrapped__ = update_everywhere  # type: ignore[attr-defined]
    return update


def _update_in_place(
    collection: Any,
    existing: dict[str, Any],
    spec: Any,
    document: dict[str, Any],
    named: dict[str, bool],
    collection_module: Any,
) -> int:
    """Apply ``document`` (as stored) to the stored ``existing``: 1 if it changed it."""
    order = list(existing)
    # A field the update replaces whole keeps its old value intact: no copy needed.
    before = {
        name: _copy(existing[name]) if inside else existing[name]
        for name, inside in named.items()
        if name in existing
    }
    if not _set_and_increment(existing, document):
        collection._apply_update_document(existing, spec, document, False)
    if all(existing.get(name, _ABSENT) == before.get(name, _ABSENT) for name in named):
        return 0
    try:
        collection._ensure_uniques(existing)
    except collection_module.DuplicateKeyError:
        # Put the document back as it was, fields in their order.
        restored = {name: before[name] if name in before else existing[name] for name in order}
        collection._store[restored["_id"]] = restored
        raise
    return 1


def _finding_and_updating_at_once(find_everywhere: Any, collection_module: Any) -> Any:
    """mongomock's ``Collection.find_one_and_update``, for the claims Tandem sends: one
    document by ``_id``, returned as it was before an update by field operators.

    mongomock runs a whole query for the document (a cursor, a copy, a second walk to
    read its datetimes), then a whole update that finds it again. Here the document is
    found once, copied and read in one walk, and updated in place as ``_update`` above
    does. Anything else is left to mongomock's own."""
    helpers = collection_module.helpers
    before_update = collection_module.ReturnDocument.BEFORE

    def find_one_and_update(
        self: Any,
        filter: Any,
        update: Any,
        projection: Any = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: Any = before_update,
        **kwargs: Any,
    ) -> Any:
        named = _fields_named(update)
        if (
            named is None
            or "_id" in named
            or type(filter) is not dict
            or not _is_key(filter.get("_id"))
            or projection is not None
            or sort is not None
            or upsert
            or return_document is not before_update
            or kwargs
        ):
            return find_everywhere(
                self, filter, update, projection, sort, upsert, return_document, **kwargs
            )
        collection_module.validate_ok_for_update(update)
        spec = helpers.patch_datetime_awareness_in_document(filter)
        existing = next(iter(self._iter_documents(spec)), None)
        if existing is None:
            return None
        found = _read_copy(existing) if self.codec_options.tz_aware else _copy(existing)
        by_id = {"_id": existing["_id"]}
        document = _as_stored_by_bson(update)
        _update_in_place(self, existing, by_id, document, named, collection_module)
        return found

    find_one_and_update.__wrapped__ = find_everywhere  # type: ignore[attr-defined]
    return find_one_and_update


def _as_stored_by_bson(document: dict[str, Any]) -> dict[str, Any]:
    """A document (inserted, or an update's) with its values as MongoDB stores them
    (``_as_stored``): encoded to BSON and decoded, in C, which also refuses what BSON
    cannot hold, as mongomock does for an insert and for each field an update sets."""
    stored: dict[str, Any] = BSON.encode(document).decode()
    return stored


_NUMBERS = (int, float)


def _set_and_increment(existing: dict[str, Any], update: dict[str, Any]) -> bool:
    """Apply an update made of ``$set`` and ``$inc`` on paths through documents (or where
    there is none yet) to ``existing``, as MongoDB does; False, having changed nothing,
    for any other update, which mongomock applies (and refuses where MongoDB would).

    mongomock applies each field through its positional machinery, copying lists and
    encoding each value to BSON once more; the values here are already copies, as
    stored (``_as_stored_by_bson``)."""
    paths: set[str] = set()
    for operator, fields in update.items():
        if operator != "$set" and operator != "$inc":
            return False
        for path, value in fields.items():
            if not path or path[0] == "$" or "\0" in path or path in paths:
                return False
            paths.add(path)
            *parents, last = path.split(".")
            target: Any = existing
            for part in parents:
                target = target.get(part, {})
                if type(target) is not dict:
                    return False
            if operator == "$inc":
                current = target.get(last, 0)
                if not isinstance(current, _NUMBERS) or isinstance(current, bool):
                    return False
                if not isinstance(value, _NUMBERS) or isinstance(value, bool):
                    return False
    for path in paths:  # a path and a path inside it: MongoDB refuses, mongomock decides
        head, dot, _ = path.rpartition(".")
        while dot:
            if head in paths:
                return False
            head, dot, _ = head.rpartition(".")
    for operator, fields in update.items():
        for path, value in fields.items():
            *parents, last = path.split(".")
            target = existing
            for part in parents:
                target = target.setdefault(part, {})
            target[last] = value if operator == "$set" else target.get(last, 0) + value
    return True


def _fields_named(update: Any) -> dict[str, bool] | None:
    """The top-level fields an update by field operators changes, each with whether it
    changes something inside it (``a.b``) rather than replaces it whole; None for any
    other update (a pipeline, a replacement, other operators, an empty operator)."""
    if type(update) is not dict or not update:
        return None
    named: dict[str, bool] = {}
    for operator, fields in update.items():
        if operator not in _FIELD_OPERATORS or type(fields) is not dict or not fields:
            return None
        for path in fields:
            name, dot, _ = path.partition(".")
            named[name] = named.get(name, False) or bool(dot)
    return named


# The values a filter of plain equalities compares (no documents, arrays or patterns).
_PLAIN = frozenset({str, int, float, bool, type(None), ObjectId, datetime})


def _matches(filter: dict[str, Any], document: Any, nothing: Any) -> bool | None:
    """mongomock's ``filter_applies`` for a filter of equalities to plain values and
    ``$in`` lists of plain values, on paths through subdocuments (Tandem's filters);
    None, to ask mongomock, for any other filter or a path through an array.
    ``nothing`` is mongomock's marker of a missing field."""
    for key, wanted in filter.items():
        if not key or key[0] == "$":
            return None
        choices = None
        if type(wanted) is dict:
            choices = wanted.get("$in") if len(wanted) == 1 else None
            if type(choices) is not list or any(type(c) not in _PLAIN for c in choices):
                return None
        elif type(wanted) not in _PLAIN:
            return None
        # As mongomock's iter_key_candidates: a missing subdocument reads as {}; a path
        # through None or a plain value finds no candidate at all, so nothing matches.
        value = document
        *parents, last = key.split(".")
        for part in parents:
            if isinstance(value, dict):
                value = value.get(part, {})
            else:
                return None if isinstance(value, list) else False
        if isinstance(value, dict):
            value = value.get(last, nothing)
        else:
            return None if isinstance(value, list) else False
        if isinstance(value, list | tuple):
            return None
        if choices is None:
            matched = value == wanted or (wanted is None and value is nothing)
        else:
            matched = (value is nothing and None in choices) or value in choices
        if not matched:
            return False
    return True


def _is_key(value: Any) -> bool:
    return isinstance(value, ObjectId | str | int) and not isinstance(value, bool)


def _copy(value: Any, memo: Any = None) -> Any:
    """``copy.deepcopy`` for what a BSON document holds."""
    # Immutable items are taken as they are without a call: most of a document's values.
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in _KEPT_BY_COPY else _copy(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _KEPT_BY_COPY else _copy(v) for v in value]
    if kind in _KEPT_BY_COPY:
        return value
    return copy.deepcopy(value)


def _read_copy(value: Any) -> Any:
    """``_as_read(_copy(value))`` in one walk: a stored document as a find returns it."""
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in _KEPT else _read_copy(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [v if type(v) in _KEPT else _read_copy(v) for v in value]
    if kind is datetime:
        return value.replace(tzinfo=UTC)
    return copy.deepcopy(value)


def _as_stored(value: Any) -> Any:
    """A value as MongoDB stores it: datetimes naive UTC, to the millisecond (what
    mongomock's ``patch_datetime_awareness_in_document`` does)."""
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in _KEPT else _as_stored(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [v if type(v) in _KEPT else _as_stored(v) for v in value]
    if kind is datetime:
        millisecond = (value.microsecond // 1000) * 1000
        if value.tzinfo is UTC:  # Tandem's own datetimes: nothing to shift
            return value.replace(tzinfo=None, microsecond=millisecond)
        offset = value.utcoffset()
        if offset is not None:
            return (value - offset).replace(tzinfo=None, microsecond=millisecond)
        return value.replace(microsecond=millisecond)
    if kind in _KEPT:
        return value
    return _mongomock_as_stored(value)  # a subclass (SON, OrderedDict), a Timestamp


def _as_read(value: Any) -> Any:
    """A stored value as a timezone-aware client reads it: datetimes in UTC."""
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in _KEPT else _as_read(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [v if type(v) in _KEPT else _as_read(v) for v in value]
    if kind is datetime:
        return value.replace(tzinfo=UTC)
    return value

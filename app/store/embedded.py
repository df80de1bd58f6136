"""The embedded default: mongomock-motor, in memory, with lookups by ``_id`` made direct.

mongomock answers every query by scanning the whole collection, so a turn would
slow down with every run ever stored. mongomock keeps documents in a mapping by
``_id``; an equality or ``$in`` filter on ``_id`` is answered from that mapping
here, and the rest of the filter is still applied, so results are exactly the same.
"""

from collections.abc import Iterator
from typing import Any

from bson import ObjectId

_patched = False


def open_embedded_client() -> Any:
    """A mongomock-motor client (timezone-aware, like the real one Tandem opens)."""
    from mongomock_motor import AsyncMongoMockClient

    answer_id_lookups_directly()
    return AsyncMongoMockClient(tz_aware=True)


def answer_id_lookups_directly() -> None:
    global _patched
    if _patched:
        return
    from mongomock import filtering
    from mongomock.collection import Collection

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

"""The embedded default: mongomock-motor, in memory, with lookups by ``_id`` made direct.

mongomock answers every query by scanning the whole collection, so a turn would
slow down with every run ever stored. mongomock keeps documents in a mapping by
``_id``; an equality filter on ``_id`` is answered from that mapping here, and
the rest of the filter is still applied, so results are exactly the same.
"""

from collections.abc import Iterator
from typing import Any

from bson import ObjectId

_patched = False


def open_embedded_client() -> Any:
    """A mongomock-motor client (timezone-aware, like the real one Tandem opens)."""
    from mongomock_motor import AsyncMongoMockClient

    _answer_id_lookups_directly()
    return AsyncMongoMockClient(tz_aware=True)


def _answer_id_lookups_directly() -> None:
    global _patched
    if _patched:
        return
    from mongomock.collection import Collection
    from mongomock.filtering import filter_applies

    scan_all = Collection._iter_documents

    def iter_documents(self: Any, filter: Any) -> Iterator[dict[str, Any]]:
        wanted = filter.get("_id") if isinstance(filter, dict) else None
        if not isinstance(wanted, ObjectId | str | int) or isinstance(wanted, bool):
            return scan_all(self, filter)  # type: ignore[no-any-return, no-untyped-call]
        try:
            document = self._store[wanted]
        except KeyError:
            return iter(())
        matches = filter_applies(filter, document)  # type: ignore[no-untyped-call]
        return iter([document] if matches else [])

    Collection._iter_documents = iter_documents  # type: ignore[method-assign]
    _patched = True

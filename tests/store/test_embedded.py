"""The embedded store's speed-ups answer exactly as mongomock's own code does."""

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import mongomock
import pytest
from bson import ObjectId
from mongomock.collection import Collection

from app.store import embedded

embedded.answer_id_lookups_directly()
NOW = datetime(2026, 11, 22, 12, 0, 0, 123456, tzinfo=UTC)
DOCUMENT: dict[str, Any] = {
    "_id": 1,
    "tenant": "acme",
    "revision": 3,
    "claim": None,
    "state": {"status": "paused", "history": [{"role": "user", "text": "hi"}], "n": 1.5},
    "tags": ["a", "b"],
    "at": NOW.replace(tzinfo=None),
}
UPDATES: list[dict[str, Any]] = [
    {
        "$set": {"claim": {"token": "t", "at": NOW, "data": [1, {"x": NOW}]}},
        "$inc": {"revision": 1},
    },
    {"$set": {"state": {"status": "done", "history": []}, "claim": None}},
    {"$set": {"claim": None}},  # changes nothing
    {"$set": {"state.status": "running", "state.new.deep": 1, "fresh.field": [1, 2]}},
    {"$set": {"tags.1": "c"}},
    {"$unset": {"claim": "", "absent": ""}},
    {"$unset": {"absent": ""}},  # changes nothing
    {"$inc": {"revision": 2, "counter": 1}, "$max": {"state.n": 9}, "$min": {"revision": 0}},
    {"$set": {"at": datetime(2026, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))}},
    {"$set": {"tenant": "$odd"}},
]


CLIENT = mongomock.MongoClient()


def collection_with(document: dict[str, Any]) -> Collection:
    collection = CLIENT.db[f"c{ObjectId()}"]
    collection.insert_one(copy.deepcopy(document))
    return collection


def update_both_ways(
    spec: dict[str, Any], update: dict[str, Any], **kwargs: Any
) -> tuple[Any, Any]:
    """The same update through the embedded store's ``_update`` and mongomock's own: each
    answer or error, and the documents after it, fields in order."""
    answers = []
    for how in (Collection._update, Collection._update.__wrapped__):  # type: ignore[attr-defined]
        collection = collection_with(DOCUMENT)
        collection.create_index("tenant", unique=True)
        collection.insert_one({"_id": 2, "tenant": "other"})
        try:
            answer: Any = how(collection, spec, copy.deepcopy(update), **kwargs)
        except Exception as error:
            answer = (type(error), str(error))
        documents = [list(d.items()) for d in collection._store.documents]  # type: ignore[attr-defined]
        answers.append((answer, documents))
    return answers[0], answers[1]


@pytest.mark.parametrize("update", UPDATES)
@pytest.mark.parametrize("spec", [{"_id": 1}, {"_id": 1, "claim": None}, {"_id": 3}])
def test_an_update_answers_and_stores_as_mongomock_does(
    spec: dict[str, Any], update: dict[str, Any]
) -> None:
    ours, mongomocks = update_both_ways(spec, update)
    assert ours == mongomocks


def test_an_update_refused_by_a_unique_index_leaves_the_document_as_it_was() -> None:
    ours, mongomocks = update_both_ways(
        {"_id": 1}, {"$set": {"tenant": "other", "claim": {"x": 1}}, "$unset": {"tags": ""}}
    )
    assert ours == mongomocks
    as_inserted = collection_with(DOCUMENT)._store.documents  # type: ignore[attr-defined]
    assert ours[1][0] == list(next(iter(as_inserted)).items())


@pytest.mark.parametrize(
    ("update", "kwargs"),
    [
        ({"$set": {"a": 1}}, {"upsert": True}),
        ({"$set": {"a": 1}}, {"multi": True}),
        ({"$push": {"tags": "c"}}, {}),
        ({"$set": {}}, {}),
        ({"tenant": "replaced"}, {}),
        ([{"$set": {"a": 1}}], {}),
        ({"$set": {"_id": 5}}, {}),
    ],
)
def test_other_updates_are_mongomocks_own(update: Any, kwargs: dict[str, Any]) -> None:
    ours, mongomocks = update_both_ways({"_id": 3 if kwargs.get("upsert") else 1}, update, **kwargs)
    assert ours[0] == mongomocks[0]


def test_values_are_stored_and_read_as_mongomock_stores_and_reads_them() -> None:
    two_hours = timezone(timedelta(hours=2))
    value = {
        "a": [NOW, NOW.astimezone(two_hours), NOW.replace(tzinfo=None), (1, "x")],
        "b": {"c": None, "d": b"z", "e": ObjectId("000000000000000000000001")},
    }
    stored = embedded._as_stored(value)
    assert stored == embedded._mongomock_as_stored(value)
    in_ms = NOW.replace(microsecond=123000)
    assert stored["a"] == [in_ms.replace(tzinfo=None)] * 3 + [[1, "x"]]
    assert embedded._as_read(stored) == {"a": [in_ms] * 3 + [[1, "x"]], "b": value["b"]}
    assert embedded._copy(stored) == stored


def find_and_update_both_ways(
    spec: dict[str, Any], update: dict[str, Any], tz_aware: bool, **kwargs: Any
) -> tuple[Any, Any]:
    """``find_one_and_update`` through the embedded store and through mongomock's own."""
    answers = []
    client = mongomock.MongoClient(tz_aware=tz_aware)
    for how in (Collection.find_one_and_update, Collection.find_one_and_update.__wrapped__):  # type: ignore[attr-defined]
        collection = client.db[f"c{ObjectId()}"]
        collection.insert_one(copy.deepcopy(DOCUMENT))
        collection.create_index("tenant", unique=True)
        collection.insert_one({"_id": 2, "tenant": "other"})
        try:
            answer: Any = how(collection, spec, copy.deepcopy(update), **kwargs)
        except Exception as error:
            answer = (type(error), str(error))
        documents = [list(d.items()) for d in collection._store.documents]  # type: ignore[attr-defined]
        answers.append((answer, documents))
    return answers[0], answers[1]


@pytest.mark.parametrize("tz_aware", [True, False])
@pytest.mark.parametrize("update", UPDATES)
@pytest.mark.parametrize(
    "spec",
    [{"_id": 1}, {"_id": 1, "claim": None, "state.status": {"$in": ["paused"]}}, {"_id": 3}],
)
def test_a_claim_answers_and_stores_as_mongomock_does(
    spec: dict[str, Any], update: dict[str, Any], tz_aware: bool
) -> None:
    ours, mongomocks = find_and_update_both_ways(spec, update, tz_aware)
    assert ours == mongomocks
    # The document returned is a copy: changing it changes nothing stored.
    if isinstance(ours[0], dict):
        ours[0]["state"]["status"] = "changed"
        assert ours[1] == mongomocks[1]


@pytest.mark.parametrize(
    ("spec", "update", "kwargs"),
    [
        ({"_id": 1}, {"$set": {"tenant": "other"}}, {}),  # refused by the unique index
        ({"_id": 1}, {"$set": {"a": 1}}, {"return_document": True}),
        ({"_id": 1}, {"$set": {"a": 1}}, {"projection": {"tenant": 1}}),
        ({"_id": 9}, {"$set": {"a": 1}}, {"upsert": True}),
        ({"tenant": "acme"}, {"$set": {"a": 1}}, {}),
        ({"_id": 1}, {"$push": {"tags": "c"}}, {}),
    ],
)
def test_other_claims_answer_as_mongomock_does(
    spec: dict[str, Any], update: dict[str, Any], kwargs: dict[str, Any]
) -> None:
    ours, mongomocks = find_and_update_both_ways(spec, update, True, **kwargs)
    assert ours == mongomocks

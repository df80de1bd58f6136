"""The embedded store's speed-ups answer exactly as mongomock's own code does."""

import copy
from collections import OrderedDict
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import mongomock
import pytest
from bson import ObjectId
from bson.errors import InvalidDocument
from mongomock import filtering
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
    {"$set": {"state.status": "x", "state": {"a": 1}}},  # a conflict MongoDB refuses
    {"$set": {"state": {"a": 1}}, "$unset": {"state.status": ""}},
    {"$set": {"claim.current_node": "n"}},  # through null: mongomock's own answer
    {"$inc": {"tenant": 1}},  # not a number
    {"$inc": {"state.n": 1, "state.count": 2}, "$set": {"state.list": (1, 2)}},
    {"$set": {"claim": {"token": "t"}, "claim.token": "u"}},
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


@pytest.mark.parametrize("update", [{"$set": {"state.bad": {1, 2}}}, {"$set": {"\x00": 1}}])
@pytest.mark.parametrize("spec", [{"_id": 1}, {"_id": 3}])
def test_an_update_bson_cannot_hold_is_refused_as_pymongo_refuses_it(
    spec: dict[str, Any], update: dict[str, Any]
) -> None:
    """PyMongo encodes an update before sending it: what BSON cannot hold is refused
    whether a document matches or not (mongomock looks only once one does), in BSON's
    words; nothing is changed."""
    ours, _ = update_both_ways(spec, update)
    error_type, message = ours[0]
    assert error_type is InvalidDocument and message.startswith("Invalid document:")
    as_inserted = next(iter(collection_with(DOCUMENT)._store.documents))  # type: ignore[attr-defined]
    assert ours[1][0] == list(as_inserted.items())


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


OID = ObjectId("000000000000000000000001")
MATCHED_DOCUMENTS: list[Any] = [
    {"_id": OID, "tenant": "acme", "claim": None, "state": {"status": "paused", "turn": 2}},
    {"_id": OID, "tenant": "acme", "claim": {"token": "t", "at": NOW}, "state": {}},
    {"_id": 1, "n": 1, "f": 1.0, "b": True, "claim": "plain", "state": OrderedDict(status="x")},
    {"_id": 2, "tags": ["a", "b"], "claim": [{"token": "t"}], "state": ("paused",)},
    {"_id": 3},
]
MATCHING_FILTERS: list[dict[str, Any]] = [
    {"_id": OID, "tenant": "acme", "state.status": {"$in": ["paused", "waiting"]}, "claim": None},
    {"_id": OID, "claim.token": "t"},
    {"claim.token": None},
    {"claim.at": NOW.replace(tzinfo=None)},
    {"state.status": None},
    {"state.turn": 2.0},
    {"n": True},
    {"b": 1},
    {"f": {"$in": [1]}},
    {"missing.deeper": None},
    {"missing": {"$in": [None, "x"]}},
    {"missing": {"$in": ["x"]}},
    {"tags": "a"},
    {"tags.0": "a"},
    {"claim.0.token": "t"},
    {"state.status": {"$in": ["paused"]}},
    {"_id": {"$in": [1, 2]}},
    {"tenant": {"$ne": "acme"}},
    {"$or": [{"tenant": "acme"}]},
    {"tenant": {"$in": [{"$regex": "a"}]}},
]


@pytest.mark.parametrize("document", MATCHED_DOCUMENTS)
@pytest.mark.parametrize("search", MATCHING_FILTERS)
def test_a_filter_matches_as_mongomocks_does(search: dict[str, Any], document: Any) -> None:
    ours = embedded._matches(search, document, filtering.NOTHING)  # type: ignore[attr-defined]
    if ours is not None:
        assert ours == filtering.filter_applies(search, document)  # type: ignore[no-untyped-call]


def test_tandems_own_filters_are_matched_without_mongomock() -> None:
    run = MATCHED_DOCUMENTS[0]
    for search in (MATCHING_FILTERS[0], {"_id": OID, "claim.token": "t"}, {"_id": OID}):
        assert embedded._matches(search, run, filtering.NOTHING) is not None  # type: ignore[attr-defined]


def insert_both_ways(document: dict[str, Any]) -> tuple[Any, Any]:
    """The same insert through the embedded store's ``_insert`` and mongomock's own: the
    answer or error, and the documents stored after it, fields in order."""
    answers = []
    for how in (Collection._insert, Collection._insert.__wrapped__):  # type: ignore[attr-defined]
        collection = collection_with({"_id": 2, "tenant": "other"})
        try:
            answer: Any = how(collection, copy.deepcopy(document))
        except Exception as error:
            answer = (type(error), str(error))
        documents = [list(d.items()) for d in collection._store.documents]  # type: ignore[attr-defined]
        answers.append((answer, documents))
    return answers[0], answers[1]


@pytest.mark.parametrize(
    "document",
    [DOCUMENT, {"_id": 2}, {"$bad": 1}, {"_id": 5, "a": {"$in": 1, "b.c": [NOW, (1, 2)]}}],
)
def test_an_insert_answers_and_stores_as_mongomock_does(document: dict[str, Any]) -> None:
    ours, mongomocks = insert_both_ways(document)
    assert ours == mongomocks


@pytest.mark.parametrize(
    "document", [{"a\x00": 1}, {"a": {"b\x00": 1}}, {"a": [{"b\x00": 1}]}, {"a": {1, 2}}]
)
def test_an_insert_bson_cannot_hold_is_refused_as_pymongo_refuses_it(
    document: dict[str, Any],
) -> None:
    """A NUL in a key, at any depth (mongomock misses those inside arrays), or a value
    BSON has no type for: refused in BSON's words, and nothing is stored."""
    (error_type, message), stored = insert_both_ways(document)[0]
    assert error_type is InvalidDocument and message.startswith("Invalid document:")
    assert stored == [[("_id", 2), ("tenant", "other")]]


def test_expired_documents_go_at_the_first_read_after_a_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """mongomock looks through a whole collection for expired documents on every read,
    so that each read would cost as much as the store holds. The embedded store looks
    once a minute, as MongoDB's TTL monitor runs: an expired run stays until then (every
    request treats it as gone anyway), then goes."""
    seconds = [1000.0]
    monkeypatch.setattr(embedded.time, "monotonic", lambda: seconds[0])
    runs = mongomock.MongoClient().db.runs
    runs.create_index([("cleanup_after", 1)], expireAfterSeconds=0)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    runs.insert_one({"_id": 1, "cleanup_after": yesterday})  # looks first: none expired yet
    seconds[0] += 59
    assert runs.find_one({"_id": 1}) is not None
    seconds[0] += 2
    assert runs.find_one({"_id": 1}) is None

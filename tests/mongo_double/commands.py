"""The commands the double answers, each run against one in-memory mongomock client.

Not thread-safe, like mongomock itself: the server calls ``Commands.run`` from one event
loop, one command at a time, so every command is atomic with respect to the others (two
``findAndModify`` on one document never interleave, as on a mongod).

A command, or a field of one, that the double does not know is refused with an error that
names it (``CommandNotFound``, code 59, for a command), never ignored: a test then fails
clearly instead of passing on behaviour a real MongoDB would not have.
"""

import itertools
import logging
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import bson
import mongomock
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument
from mongomock import filtering
from pymongo import ReturnDocument
from pymongo.errors import CollectionInvalid, DuplicateKeyError, OperationFailure

from app.store import embedded
from tests.mongo_double.wire import MAX_MESSAGE_SIZE

log = logging.getLogger(__name__)

MAX_WIRE_VERSION = 21  # MongoDB 7.0; PyMongo 4.20 accepts 9 to 29
MAX_BSON_OBJECT_SIZE = 16 * 1024 * 1024
DEFAULT_FIRST_BATCH = 101  # documents in a cursor's first batch unless batchSize says otherwise

# Fields any command may carry that change nothing on one in-memory store: routing and
# session fields, concerns (there is one node), time limits (every command is instant).
GENERIC_FIELDS = frozenset(
    {
        "$db",
        "lsid",
        "$clusterTime",
        "$readPreference",
        "readConcern",
        "writeConcern",
        "maxTimeMS",
        "comment",
        "apiVersion",
        "apiStrict",
        "apiDeprecationErrors",
    }
)
ANY_FIELDS = None  # a command whose fields are all accepted (the handshake's, say)

BAD_VALUE, INTERNAL_ERROR, FAILED_TO_PARSE = 2, 1, 9
NAMESPACE_NOT_FOUND, CURSOR_NOT_FOUND, NAMESPACE_EXISTS = 26, 43, 48
COMMAND_NOT_FOUND, NOT_IMPLEMENTED, DUPLICATE_KEY = 59, 238, 11000
_CODE_NAMES = {
    BAD_VALUE: "BadValue",
    INTERNAL_ERROR: "InternalError",
    FAILED_TO_PARSE: "FailedToParse",
    NAMESPACE_NOT_FOUND: "NamespaceNotFound",
    CURSOR_NOT_FOUND: "CursorNotFound",
    NAMESPACE_EXISTS: "NamespaceExists",
    COMMAND_NOT_FOUND: "CommandNotFound",
    NOT_IMPLEMENTED: "NotImplemented",
    DUPLICATE_KEY: "DuplicateKey",
}


class CommandError(Exception):
    """A command that fails as a whole, answered ``{ok: 0, errmsg, code, codeName}``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

    def reply(self) -> dict[str, Any]:
        return error_reply(self.code, str(self))


def error_reply(code: int, message: str) -> dict[str, Any]:
    return {"ok": 0.0, "errmsg": message, "code": code, "codeName": _CODE_NAMES.get(code, "")}


@dataclass
class Context:
    """What a handler needs besides the command: the database it is sent to, the
    connection it came on."""

    database: str
    connection_id: int


Handler = Callable[["Commands", dict[str, Any], Context], dict[str, Any]]


@dataclass(frozen=True)
class CommandSpec:
    handler: Handler
    fields: frozenset[str] | None  # accepted besides the command's own name and GENERIC_FIELDS


_COMMANDS: dict[str, CommandSpec] = {}


def command(*names: str, fields: Iterable[str] | None = ()) -> Callable[[Handler], Handler]:
    """Registers a handler under ``names``, accepting ``fields`` (all of them if None)."""

    def register(handler: Handler) -> Handler:
        accepted = None if fields is None else frozenset(fields)
        for name in names:
            _COMMANDS[name] = CommandSpec(handler, accepted)
        return handler

    return register


def supported_commands() -> frozenset[str]:
    """The names of every command the double answers."""
    return frozenset(_COMMANDS)


@dataclass
class _Cursor:
    namespace: str
    pending: deque[dict[str, Any]]


class Commands:
    """Answers commands from one mongomock client (see the module's docstring)."""

    def __init__(self) -> None:
        # The embedded store's own speed-up: lookups by _id answered from mongomock's
        # mapping instead of a scan, with exactly the same results (app/store/embedded.py).
        embedded.answer_id_lookups_directly()
        self._client: Any = mongomock.MongoClient()
        self._cursors: dict[int, _Cursor] = {}

    def run(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        """The reply to ``command``; failures come back as error replies, never raised."""
        name = next(iter(command), "")
        spec = _COMMANDS.get(name)
        if spec is None:
            return error_reply(
                COMMAND_NOT_FOUND, f"no such command: '{name}' (the wire double does not know it)"
            )
        if spec.fields is not None:
            unknown = sorted(set(command) - spec.fields - GENERIC_FIELDS - {name})
            if unknown:
                return error_reply(
                    BAD_VALUE, f"the wire double does not support {unknown} in '{name}'"
                )
        try:
            reply = spec.handler(self, command, context)
        except CommandError as error:
            return error.reply()
        except DuplicateKeyError:
            return error_reply(DUPLICATE_KEY, _duplicate_key_message(context, command))
        except (OperationFailure, CollectionInvalid) as error:
            code = getattr(error, "code", None) or BAD_VALUE
            return error_reply(code, str(error))
        except NotImplementedError as error:
            return error_reply(NOT_IMPLEMENTED, f"mongomock does not implement this: {error}")
        except Exception as error:  # a bug of the double: say so, and keep serving
            log.exception("the wire double failed on %r", command)
            return error_reply(INTERNAL_ERROR, f"the wire double failed: {error!r}")
        reply["ok"] = 1.0
        return reply

    # -- the handshake and the driver's own commands -------------------------------------

    @command("hello", "isMaster", "ismaster", fields=ANY_FIELDS)
    def _hello(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        # No topologyVersion: PyMongo then polls with hello instead of streaming it, and
        # no setName: a standalone, so no retryable writes or transactions are attempted.
        primary = "isWritablePrimary" if next(iter(command)) == "hello" else "ismaster"
        return {
            primary: True,
            "helloOk": True,
            "maxBsonObjectSize": MAX_BSON_OBJECT_SIZE,
            "maxMessageSizeBytes": MAX_MESSAGE_SIZE,
            "maxWriteBatchSize": 100_000,
            "localTime": datetime.now(UTC),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": context.connection_id,
            "minWireVersion": 0,
            "maxWireVersion": MAX_WIRE_VERSION,
            "readOnly": False,
        }

    @command("ping")
    def _ping(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        return {}

    @command("buildInfo", "buildinfo")
    def _build_info(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        return {
            "version": "7.0.0",
            "versionArray": [7, 0, 0, 0],
            "gitVersion": "mongo-wire-double",
            "bits": 64,
            "maxBsonObjectSize": MAX_BSON_OBJECT_SIZE,
        }

    @command("endSessions", fields=ANY_FIELDS)
    def _end_sessions(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        return {}  # sessions carry nothing here: there are no transactions

    # -- reads and cursors ----------------------------------------------------------------

    @command(
        "find",
        fields={
            "filter",
            "sort",
            "projection",
            "skip",
            "limit",
            "batchSize",
            "singleBatch",
            "hint",
            "noCursorTimeout",
            "allowDiskUse",
            "allowPartialResults",
        },
    )
    def _find(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        collection = self._collection(command, context)
        limit = int(command.get("limit", 0))
        single_batch = bool(command.get("singleBatch", False))
        if limit < 0:  # the legacy spelling of "this many, in one batch"
            limit, single_batch = -limit, True
        found = collection.find(
            command.get("filter") or {},
            command.get("projection") or None,
            skip=int(command.get("skip", 0)),
            limit=limit,
            sort=_sort(command.get("sort")),
        )
        return self._open_cursor(
            _namespace(command, context), found, command.get("batchSize"), single_batch
        )

    @command("explain", fields={"verbosity"})
    def _explain(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        """``explain`` of a ``find``: the plan is mongomock's (it has none), but
        ``executionStats`` counts the documents mongomock examined, as a real server
        would, so a test can check that a query does not scan a collection."""
        query = command["explain"]
        if next(iter(query), None) != "find":
            raise CommandError(COMMAND_NOT_FOUND, "the wire double explains only find")
        examined = 0
        matches = filtering.filter_applies

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal examined
            examined += 1
            return matches(*args, **kwargs)

        collection = self._collection(query, context)
        filtering.filter_applies = counting
        mongomock.collection.filter_applies = counting
        try:
            found = list(
                collection.find(
                    query.get("filter") or {},
                    query.get("projection") or None,
                    sort=_sort(query.get("sort")),
                )
            )
        finally:
            filtering.filter_applies = matches
            mongomock.collection.filter_applies = matches
        return {
            "queryPlanner": {"namespace": _namespace(query, context), "winningPlan": {}},
            "executionStats": {"nReturned": len(found), "totalDocsExamined": examined},
        }

    @command("getMore", fields={"collection", "batchSize"})
    def _get_more(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        cursor_id = int(command["getMore"])
        cursor = self._cursors.get(cursor_id)
        if cursor is None:
            raise CommandError(CURSOR_NOT_FOUND, f"cursor id {cursor_id} not found")
        batch = _take_batch(cursor.pending, command.get("batchSize"))
        if not cursor.pending:
            del self._cursors[cursor_id]
            cursor_id = 0
        return {"cursor": {"nextBatch": batch, "id": Int64(cursor_id), "ns": cursor.namespace}}

    @command("killCursors", fields={"cursors"})
    def _kill_cursors(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        killed: list[int] = []
        not_found: list[int] = []
        for cursor_id in command.get("cursors", []):
            found = self._cursors.pop(int(cursor_id), None)
            (killed if found else not_found).append(cursor_id)
        return {
            "cursorsKilled": killed,
            "cursorsNotFound": not_found,
            "cursorsAlive": [],
            "cursorsUnknown": [],
        }

    @command("count", fields={"query", "limit", "skip", "hint"})
    def _count(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        options = {key: int(command[key]) for key in ("limit", "skip") if command.get(key)}
        count = self._collection(command, context).count_documents(
            command.get("query") or {}, **options
        )
        return {"n": count}

    @command("distinct", fields={"key", "query"})
    def _distinct(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        collection = self._collection(command, context)
        return {"values": collection.distinct(command["key"], command.get("query") or {})}

    @command("aggregate", fields={"pipeline", "cursor", "allowDiskUse", "hint"})
    def _aggregate(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        if not isinstance(command["aggregate"], str):
            raise CommandError(NOT_IMPLEMENTED, "the wire double aggregates collections only")
        found = self._collection(command, context).aggregate(command.get("pipeline", []))
        batch_size = (command.get("cursor") or {}).get("batchSize")
        return self._open_cursor(_namespace(command, context), found, batch_size, False)

    # -- writes ---------------------------------------------------------------------------

    @command("insert", fields={"documents", "ordered", "bypassDocumentValidation"})
    def _insert(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        collection = self._collection(command, context)

        def insert(index: int, document: dict[str, Any]) -> int:
            collection.insert_one(document)
            return 1

        return self._write_each(command, context, command.get("documents", []), insert)

    @command("update", fields={"updates", "ordered", "bypassDocumentValidation", "let"})
    def _update(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        collection = self._collection(command, context)
        modified = 0
        upserted: list[dict[str, Any]] = []

        def update(index: int, statement: dict[str, Any]) -> int:
            nonlocal modified
            _refuse_unknown(statement, {"q", "u", "upsert", "multi", "arrayFilters", "hint"})
            query, change = statement["q"], statement["u"]
            upsert = bool(statement.get("upsert", False))
            if _is_replacement(change):
                result = collection.replace_one(query, change, upsert=upsert)
            else:
                method = collection.update_many if statement.get("multi") else collection.update_one
                result = method(
                    query, change, upsert=upsert, array_filters=statement.get("arrayFilters")
                )
            modified += result.modified_count
            if result.upserted_id is not None:
                upserted.append({"index": index, "_id": result.upserted_id})
                return 1  # n counts the upserted document as well as those matched
            return int(result.matched_count)

        reply = self._write_each(command, context, command.get("updates", []), update)
        reply["nModified"] = modified
        if upserted:
            reply["upserted"] = upserted
        return reply

    @command("delete", fields={"deletes", "ordered", "let"})
    def _delete(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        collection = self._collection(command, context)

        def delete(index: int, statement: dict[str, Any]) -> int:
            _refuse_unknown(statement, {"q", "limit", "hint"})
            method = collection.delete_one if statement.get("limit") else collection.delete_many
            return int(method(statement["q"]).deleted_count)

        return self._write_each(command, context, command.get("deletes", []), delete)

    @command(
        "findAndModify",
        "findandmodify",
        fields={
            "query",
            "sort",
            "remove",
            "update",
            "new",
            "fields",
            "upsert",
            "arrayFilters",
            "bypassDocumentValidation",
            "hint",
            "let",
        },
    )
    def _find_and_modify(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        collection = self._collection(command, context)
        query = command.get("query") or {}
        sort = _sort(command.get("sort"))
        projection = command.get("fields") or None
        change = command.get("update")
        if bool(command.get("remove")) == (change is not None):
            raise CommandError(FAILED_TO_PARSE, "Either an update or remove=true must be specified")
        if command.get("remove"):
            removed = collection.find_one_and_delete(query, projection, sort=sort)
            return {"lastErrorObject": {"n": int(removed is not None)}, "value": removed}
        if isinstance(change, list):
            raise CommandError(NOT_IMPLEMENTED, "the wire double has no pipeline updates")
        replace = _is_replacement(change)
        returned = ReturnDocument.AFTER if command.get("new") else ReturnDocument.BEFORE
        # Only an upsert must know first whether it inserts: its reply then says so.
        upsert = bool(command.get("upsert"))
        if not upsert or collection.find_one(query, {"_id": 1}, sort=sort) is not None:
            if replace:
                value = collection.find_one_and_replace(
                    query, change, projection, sort=sort, return_document=returned
                )
            else:
                value = collection.find_one_and_update(
                    query,
                    change,
                    projection,
                    sort=sort,
                    return_document=returned,
                    array_filters=command.get("arrayFilters"),
                )
            found = value is not None
            return {"lastErrorObject": {"n": int(found), "updatedExisting": found}, "value": value}
        # An upsert that inserts: the reply names the new document's _id.
        if replace:
            created = collection.replace_one(query, change, upsert=True).upserted_id
        else:
            created = collection.update_one(query, change, upsert=True).upserted_id
        value = collection.find_one({"_id": created}, projection) if command.get("new") else None
        return {
            "lastErrorObject": {"n": 1, "updatedExisting": False, "upserted": created},
            "value": value,
        }

    # -- collections, indexes, databases --------------------------------------------------

    @command("createIndexes", fields={"indexes", "commitQuorum"})
    def _create_indexes(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        collection = self._collection(command, context)
        existed = self._exists(command, context)
        before = len(collection.index_information()) if existed else 0
        for index in command.get("indexes", []):
            _refuse_unknown(
                index,
                {
                    "key",
                    "name",
                    "v",
                    "unique",
                    "sparse",
                    "background",
                    "partialFilterExpression",
                    "expireAfterSeconds",
                },
            )
            options = {k: v for k, v in index.items() if k not in {"key", "name", "v"}}
            collection.create_index(list(index["key"].items()), name=index["name"], **options)
        return {
            "createdCollectionAutomatically": not existed,
            "numIndexesBefore": before,
            "numIndexesAfter": len(collection.index_information()),
        }

    @command("listIndexes", fields={"cursor"})
    def _list_indexes(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        if not self._exists(command, context):
            raise CommandError(
                NAMESPACE_NOT_FOUND, f"ns does not exist: {_namespace(command, context)}"
            )
        indexes = [
            {"v": 2, "key": dict(info["key"]), "name": name}
            | {k: v for k, v in info.items() if k not in {"key", "v"}}
            for name, info in self._collection(command, context).index_information().items()
        ]
        batch_size = (command.get("cursor") or {}).get("batchSize")
        return self._open_cursor(_namespace(command, context), indexes, batch_size, False)

    @command("listCollections", fields={"filter", "nameOnly", "authorizedCollections", "cursor"})
    def _list_collections(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        database = self._client[context.database]
        described = [
            {"name": name, "type": "collection", "options": {}, "info": {"readOnly": False}}
            for name in database.list_collection_names()
        ]
        wanted = command.get("filter") or {}
        found = [d for d in described if filtering.filter_applies(wanted, d)]  # type: ignore[no-untyped-call]
        batch_size = (command.get("cursor") or {}).get("batchSize")
        namespace = f"{context.database}.$cmd.listCollections"
        return self._open_cursor(namespace, found, batch_size, False)

    @command("listDatabases", fields={"nameOnly", "filter", "authorizedDatabases"})
    def _list_databases(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        described = [
            {"name": name, "sizeOnDisk": 0, "empty": False}
            for name in self._client.list_database_names()
        ]
        wanted = command.get("filter") or {}
        found = [d for d in described if filtering.filter_applies(wanted, d)]  # type: ignore[no-untyped-call]
        return {"databases": found, "totalSize": 0}

    @command("create")
    def _create(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        try:
            self._client[context.database].create_collection(command["create"])
        except CollectionInvalid as error:
            raise CommandError(NAMESPACE_EXISTS, str(error)) from error
        return {}

    @command("drop")
    def _drop(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        if not self._exists(command, context):
            return {}  # as MongoDB 7 answers for a collection that is not there
        indexes = len(self._collection(command, context).index_information())
        self._client[context.database].drop_collection(command["drop"])
        return {"nIndexesWas": indexes, "ns": _namespace(command, context)}

    @command("dropDatabase")
    def _drop_database(self, command: dict[str, Any], context: Context) -> dict[str, Any]:
        self._client.drop_database(context.database)
        return {"dropped": context.database}

    # -- helpers --------------------------------------------------------------------------

    def _collection(self, command: dict[str, Any], context: Context) -> Any:
        name = next(iter(command.values()))
        if not isinstance(name, str) or not name:
            raise CommandError(BAD_VALUE, f"collection name must be a string, not {name!r}")
        return self._client[context.database][name]

    def _exists(self, command: dict[str, Any], context: Context) -> bool:
        name = next(iter(command.values()))
        return name in self._client[context.database].list_collection_names()

    def _open_cursor(
        self,
        namespace: str,
        documents: Iterable[dict[str, Any]],
        batch_size: int | None,
        single_batch: bool,
    ) -> dict[str, Any]:
        """A cursor reply: the first batch, and the rest kept for getMore unless the
        command asked for one batch. Results are read at once (a snapshot)."""
        pending = deque(documents)
        first = _take_batch(pending, batch_size if batch_size is not None else DEFAULT_FIRST_BATCH)
        cursor_id = 0
        if pending and not single_batch:
            cursor_id = next(i for i in _cursor_ids() if i not in self._cursors)
            self._cursors[cursor_id] = _Cursor(namespace, pending)
        return {"cursor": {"firstBatch": first, "id": Int64(cursor_id), "ns": namespace}}

    def _write_each(
        self,
        command: dict[str, Any],
        context: Context,
        statements: list[dict[str, Any]],
        write: Callable[[int, dict[str, Any]], int],
    ) -> dict[str, Any]:
        """Runs a write command's statements in order, collecting write errors (as MongoDB
        does: an ordered write stops at its first error, an unordered one goes on)."""
        ordered = bool(command.get("ordered", True))
        count = 0
        errors = []
        for index, statement in enumerate(statements):
            try:
                count += write(index, statement)
            except DuplicateKeyError:
                message = _duplicate_key_message(context, command)
                errors.append({"index": index, "code": DUPLICATE_KEY, "errmsg": message})
            except CommandError as error:
                errors.append({"index": index, "code": error.code, "errmsg": str(error)})
            except OperationFailure as error:
                errors.append(
                    {"index": index, "code": error.code or BAD_VALUE, "errmsg": str(error)}
                )
            else:
                continue
            if ordered:
                break
        reply: dict[str, Any] = {"n": count}
        if errors:
            reply["writeErrors"] = errors
        return reply


def _namespace(command: dict[str, Any], context: Context) -> str:
    return f"{context.database}.{next(iter(command.values()))}"


def _sort(sort: dict[str, Any] | None) -> list[tuple[str, Any]] | None:
    return list(sort.items()) if sort else None


def _is_replacement(change: Any) -> bool:
    return isinstance(change, dict) and not any(key.startswith("$") for key in change)


def _refuse_unknown(document: dict[str, Any], accepted: set[str]) -> None:
    unknown = sorted(set(document) - accepted)
    if unknown:
        raise CommandError(BAD_VALUE, f"the wire double does not support {unknown}")


def _take_batch(pending: deque[dict[str, Any]], size: int | None) -> list[RawBSONDocument]:
    """Up to ``size`` documents (all if None or 0), within one reply's 16 MiB; each is
    encoded once, here, and embedded in the reply as it is."""
    limit = size or len(pending)
    batch: list[RawBSONDocument] = []
    total = 0
    while pending and len(batch) < limit:
        encoded = bson.encode(pending[0])
        if batch and total + len(encoded) > MAX_BSON_OBJECT_SIZE - 1024 * 1024:
            break
        pending.popleft()
        batch.append(RawBSONDocument(encoded))
        total += len(encoded)
    return batch


def _cursor_ids() -> Iterable[int]:
    return (random.getrandbits(62) + 1 for _ in itertools.count())


def _duplicate_key_message(context: Context, command: dict[str, Any]) -> str:
    # mongomock does not say which index refused the document, so neither can the double.
    return f"E11000 duplicate key error collection: {_namespace(command, context)}"

"""A wire-level MongoDB double: a small server that speaks MongoDB's wire protocol on
loopback and answers from an in-memory mongomock database.

**A test and benchmark tool, never a deployment option.** It keeps nothing on disk, has
no authentication, no replication, no transactions, and its answers are only as faithful
as mongomock. It exists so that the tests (and ``scripts/bench.py``) can run Tandem on
PyMongo's real ``AsyncMongoClient`` — its connection pool, monitoring, sessions, BSON and
error handling — and run several ``python -m app`` processes on one store, on machines
where no MongoDB server can be installed.

Use it in a test, in this process (a thread with its own event loop)::

    with running_in_thread() as double:
        client = AsyncMongoClient(double.uri, tz_aware=True)

or in a process of its own, which outlives server processes killed meanwhile::

    with running_in_process() as double:
        env = {**os.environ, "MONGODB_URI": double.uri}

or by hand: ``python -m tests.mongo_double --port 0`` prints the port it listens on, and
serves until SIGTERM or SIGINT. Point ``MONGODB_URI`` at
``mongodb://127.0.0.1:PORT/?directConnection=true``. The tests' session fixture
``mongo_double`` (``tests/conftest.py``) runs one for the whole session.

**Why not mockupdb.** MongoDB's ``mockupdb`` scripts replies request by request and its
last release (1.8.1, 2021) predates PyMongo 4.20, which reads only OP_MSG replies; the
protocol subset a driver needs (the 16-byte header, OP_MSG with its two section kinds, and
the legacy OP_QUERY handshake) is about a hundred lines on ``bson`` from PyMongo, and an
asyncio server then serves every connection concurrently while running commands one at a
time, which is what mongomock (not thread-safe) needs.

**What it answers** (``commands.py``): the handshake (``hello``, ``isMaster``; a standalone
reporting maxWireVersion 21 and sessions, so PyMongo attaches ``lsid`` and attempts no
retryable writes or transactions), ``ping``, ``buildInfo``, ``endSessions``; ``find``
(filter, projection, sort, skip, limit, batchSize, singleBatch), ``getMore``,
``killCursors``, ``count``, ``distinct``, ``aggregate`` (on a collection); ``insert``,
``update`` (operators, replacements, upserts, multi), ``delete``, ``findAndModify``
(update, replace or remove; before or after; upsert; sort; fields) with ``lastErrorObject``;
``createIndexes`` (unique, sparse, partial: enforced, so a duplicate comes back as a write
error with code 11000 and PyMongo raises ``DuplicateKeyError``), ``listIndexes``,
``listCollections``, ``listDatabases``, ``create``, ``drop``, ``dropDatabase``. Routing
and session fields (``$db``, ``lsid``, ``$clusterTime``, read and write concerns...) are
accepted and change nothing; an unacknowledged write (``moreToCome``) gets no reply.

**What it does not**: any other command answers ``CommandNotFound`` (code 59), and any
field a command does not know (``collation``, ``txnNumber``, pipeline updates...) is
refused by name rather than ignored. No transactions, change streams, tailable or exhaust
cursors, compression, TLS or authentication; no TTL monitor (TTL indexes expire
documents as the embedded store's do, at the first command on the collection a minute or
more after the last look, as MongoDB's monitor runs once a minute); cursors are
snapshots taken when they open; write concerns are moot (one node, in memory); query
semantics are mongomock's.
"""

from tests.mongo_double.commands import supported_commands
from tests.mongo_double.server import RunningDouble, running_in_process, running_in_thread

__all__ = ["RunningDouble", "running_in_process", "running_in_thread", "supported_commands"]

"""A MONGODB_URI that Tandem's runs cannot rest on is refused at start-up, in one sentence."""

import pytest

from app.store.database import Connection, StoreUnavailable


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("readPreference=secondaryPreferred", "readPreference=secondaryPreferred"),
        ("readPreference=nearest", "readPreference=nearest"),
        ("w=0", "w=0"),
    ],
)
def test_reads_off_the_primary_or_unacknowledged_writes_are_refused(query: str, named: str) -> None:
    # A claim, a commit and a publish's wait each rely on reading what was just written.
    with pytest.raises(StoreUnavailable) as refused:
        Connection(f"mongodb://tandem:secret@127.0.0.1:1/?{query}", "tandem")
    message = str(refused.value)
    assert named in message and "secret" not in message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize("query", ["", "?readPreference=primary&w=majority", "?w=1"])
async def test_primary_reads_and_acknowledged_writes_are_taken(query: str) -> None:
    connection = Connection(f"mongodb://127.0.0.1:1/{query}", "tandem")
    await connection.close()

"""Log lines: plain text on a terminal by default, JSON lines when asked
(``TANDEM_LOG_FORMAT=json``), each carrying the id of the request it belongs to.

Tandem's own lines name runs, workflows, turns, tenants, statuses and durations as
fields (``extra``), so that a JSON line carries them as keys; they never carry an API
key or the text of a message.
"""

import contextvars
import json
import logging
from datetime import UTC, datetime
from typing import Any

# The id of the HTTP request being served (``app.api.request_ids``); None outside one.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# The fields Tandem's lines may carry, in the order a JSON line shows them.
FIELDS = ("request_id", "run_id", "workflow_id", "turn", "tenant", "status", "duration_ms")
# What every record has, and uvicorn's copy of its message with terminal colours.
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"color_message"}


def stamp_records_with_request_ids() -> None:
    """Make every log record carry the id of the request being served (once a process):
    Tandem's lines and uvicorn's and the libraries' alike, whatever handler shows them."""
    make = logging.getLogRecordFactory()
    if getattr(make, "stamps_request_ids", False):
        return

    def with_request_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        record.request_id = request_id.get()
        return record

    with_request_id.stamps_request_ids = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(with_request_id)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, then Tandem's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        for name, value in vars(record).items():  # other extras, as given
            if name not in _RESERVED and name not in line and name not in FIELDS:
                line[name] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``LEVEL logger: message`` then Tandem's fields as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = [
            f"{name}={getattr(record, name)}"
            for name in FIELDS
            if getattr(record, name, None) is not None
        ]
        if not fields:
            return text
        first, newline, rest = text.partition("\n")  # keep a traceback after the fields
        return f"{first} [{' '.join(fields)}]{newline}{rest}"


def configure_logging(level: str, json_lines: bool) -> None:
    """Set up the root logger (uvicorn's loggers propagate to it)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    stamp_records_with_request_ids()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

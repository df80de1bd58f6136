"""The one place where errors become HTTP answers: ``{"detail", "code"}`` (+ ``errors``).

Domain errors carry their status and code; Litestar's own exceptions are mapped
to the contract's codes; anything unexpected is logged and answered as a 500
without a stack trace. ``error_responses`` documents them in the OpenAPI document,
each code with a real answer as its example.
"""

import logging
import re
from collections import defaultdict
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from app.api.schemas import ERROR_CODES, ErrorBody
from app.engine.templating import MAX_VALUE_DEPTH
from app.errors import ErrorItem, TandemError

logger = logging.getLogger("tandem")

# The code of an HTTP error that Litestar raises itself, by status; any other status
# answers bad_request (4xx) or internal_error (5xx).
_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    503: "unavailable",
}
_MSGSPEC_AT = re.compile(r"^(?P<message>.*?) - at `\$(?P<path>[^`]*)`$")
# msgspec names a missing or unknown field in its message, at the path of its object.
_FIELD_IN_MESSAGE = {
    re.compile(r"^Object missing required field `(?P<field>[^`]*)`$"): "is required",
    re.compile(r"^Object contains unknown field `(?P<field>[^`]*)`$"): "is not a known field",
}


def error_response(
    status: int, body: ErrorBody, headers: dict[str, str] | None = None
) -> Response[ErrorBody]:
    return Response(body, status_code=status, headers=headers)


def handle_tandem_error(request: Request[Any, Any, Any], error: TandemError) -> Response[ErrorBody]:
    if error.status_code == 409:
        metrics = request.app.state.get("metrics")
        if metrics is not None:
            metrics.conflicts.labels(error.code).inc()
    return error_response(
        error.status_code, ErrorBody(detail=error.detail, code=error.code, errors=error.errors)
    )


def handle_http_exception(_: Request[Any, Any, Any], error: HTTPException) -> Response[ErrorBody]:
    status = error.status_code
    if isinstance(error, ValidationException):
        return error_response(400, _validation_body(error))
    if status == HTTP_500_INTERNAL_SERVER_ERROR:
        return handle_unexpected(_, error)
    detail, code = str(error.detail), _code_for(status)
    if status == 413:
        detail = "The request body is larger than this server accepts."
    elif status == 404 and code == "not_found" and detail == "Not Found":
        detail = "There is nothing at this path."
    elif status == 405:
        allowed = (error.headers or {}).get("allow", (error.headers or {}).get("Allow", ""))
        detail = f"This path does not take that method; it takes {allowed or 'others'}."
    elif status == 400 and _caused_by_bad_json(error):
        detail, code = f"The request body is not valid JSON: {detail}", "invalid_json"
    return error_response(status, ErrorBody(detail=detail, code=code), headers=error.headers)


def handle_unexpected(_: Request[Any, Any, Any], error: Exception) -> Response[ErrorBody]:
    logger.exception("unexpected error", exc_info=error)
    return error_response(
        HTTP_500_INTERNAL_SERVER_ERROR,
        ErrorBody(detail="The server failed to answer this request.", code="internal_error"),
    )


def _code_for(status: int) -> str:
    return _CODES_BY_STATUS.get(status, "bad_request" if status < 500 else "internal_error")


def _caused_by_bad_json(error: BaseException) -> bool:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, msgspec.DecodeError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _validation_body(error: ValidationException) -> ErrorBody:
    items = [
        _validation_item(entry)
        for entry in error.extra or []
        if isinstance(entry, dict) and not _absent_body(entry)
    ]
    if not items:
        return ErrorBody(detail=str(error.detail), code="validation_error")
    return ErrorBody(
        detail="The request is not valid: " + "; ".join(f"{i.path}: {i.message}" for i in items),
        code="validation_error",
        errors=items,
    )


def _validation_item(entry: dict[str, Any]) -> ErrorItem:
    """One of Litestar's validation messages, with the path as the client wrote it.

    Litestar gives a query or path parameter's name as ``key`` (its ``source`` says where
    it was), and a body field's path under the handler's ``data`` argument.
    """
    message = str(entry.get("message", "is invalid"))
    key = entry.get("key")
    path = str(key) if key and key != "data" else ""
    match = _MSGSPEC_AT.match(message)
    if match:
        message = match["message"]
        path = _join(path, match["path"].lstrip("."))
    for pattern, meaning in _FIELD_IN_MESSAGE.items():
        if named := pattern.match(message):
            path, message = _join(path, named["field"]), meaning
    return ErrorItem(path=path or "body", message=message)


def _absent_body(entry: dict[str, Any]) -> bool:
    # When another value is invalid, Litestar checks each argument again and reports an
    # optional body that was not sent as the KeyError of its lookup: not an error.
    return entry.get("key") == "data" and entry.get("message") == "'data'"


def _join(path: str, field: str) -> str:
    return f"{path}.{field}" if path and field else path or field


_RUN = "65f0c0ffee0000000000abcd"
_NESTED = f"the value is nested deeper than {MAX_VALUE_DEPTH} levels"
# A real answer for each code a route documents (tests/api/test_openapi_and_health.py
# provokes each one and compares).
EXAMPLES: dict[str, ErrorBody] = {
    "invalid_json": ErrorBody(
        detail="The request body is not valid JSON: inputs.a is not valid UTF-8 (byte 0xff).",
        code="invalid_json",
        errors=[ErrorItem(path="inputs.a", message="is not valid UTF-8 (byte 0xff)")],
    ),
    "validation_error": ErrorBody(
        detail="The request is not valid: run_input.colour: is not a known field",
        code="validation_error",
        errors=[ErrorItem(path="run_input.colour", message="is not a known field")],
    ),
    "invalid_id": ErrorBody(
        detail="run_id must be 24 hexadecimal digits, not '65f0c0ffee'.",
        code="invalid_id",
        errors=[ErrorItem(path="run_id", message="must be 24 hexadecimal digits")],
    ),
    "invalid_input": ErrorBody(
        detail=f"inputs cannot be stored: {_NESTED}.",
        code="invalid_input",
        errors=[ErrorItem(path="inputs", message=_NESTED)],
    ),
    "message_too_large": ErrorBody(
        detail="The message is larger than 32768 bytes.",
        code="message_too_large",
        errors=[ErrorItem(path="run_input.message", message="is too large")],
    ),
    "unknown_command": ErrorBody(
        detail="Unknown command 'pause': the only command is 'stop'.",
        code="unknown_command",
        errors=[ErrorItem(path="run_input.command", message="must be 'stop'")],
    ),
    "bad_request": ErrorBody(
        detail="A stop needs the run_id of the run to stop.", code="bad_request"
    ),
    "unauthorized": ErrorBody(detail="Unknown API key.", code="unauthorized"),
    "not_found": ErrorBody(detail=f"No run {_RUN}.", code="not_found"),
    "turn_in_progress": ErrorBody(
        detail=f"Run {_RUN} is executing another turn.", code="turn_in_progress"
    ),
    "run_terminal": ErrorBody(
        detail=f"Run {_RUN} is completed: it takes no more turns.", code="run_terminal"
    ),
    "request_in_progress": ErrorBody(
        detail=f"The first request with this Idempotency-Key is executing turn 2 of run {_RUN}.",
        code="request_in_progress",
    ),
    "idempotency_key_reused": ErrorBody(
        detail="This Idempotency-Key was first sent with another request: a key names one "
        "request (its path, version, body, Accept, Prefer and X-Execution-Source).",
        code="idempotency_key_reused",
    ),
    "payload_too_large": ErrorBody(
        detail="The request body is larger than this server accepts.", code="payload_too_large"
    ),
    "invalid_definition": ErrorBody(
        detail="The definition has 1 problem(s).",
        code="invalid_definition",
        errors=[ErrorItem(path="start", message="names no node: 'greet'")],
    ),
    "unavailable": ErrorBody(detail="MongoDB does not answer.", code="unavailable"),
}


def error_responses(*codes: str) -> dict[int, ResponseSpec]:
    """The OpenAPI entries of a route's error answers: one per status, listing its codes
    with what each means and a real answer for each."""
    by_status: dict[int, list[str]] = defaultdict(list)
    for code in codes:
        by_status[ERROR_CODES[code][0]].append(code)
    return {
        status: ResponseSpec(
            data_container=ErrorBody,
            description="; ".join(f"`{code}`: {ERROR_CODES[code][1]}" for code in status_codes),
            generate_examples=False,
            examples=[
                Example(id=code, summary=code, value=msgspec.to_builtins(EXAMPLES[code]))
                for code in status_codes
            ],
        )
        for status, status_codes in sorted(by_status.items())
    }

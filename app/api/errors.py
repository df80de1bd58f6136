"""The one place where errors become HTTP answers: ``{"detail", "code"}`` (+ ``errors``).

Domain errors carry their status and code; Litestar's own exceptions are mapped
to the contract's codes; anything unexpected is logged and answered as a 500
without a stack trace.
"""

import logging
import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from app.api.schemas import ErrorBody
from app.errors import ErrorItem, TandemError

logger = logging.getLogger("tandem")

_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
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


def handle_tandem_error(_: Request[Any, Any, Any], error: TandemError) -> Response[ErrorBody]:
    return error_response(
        error.status_code, ErrorBody(detail=error.detail, code=error.code, errors=error.errors)
    )


def handle_http_exception(_: Request[Any, Any, Any], error: HTTPException) -> Response[ErrorBody]:
    status = error.status_code
    if isinstance(error, ValidationException):
        return error_response(400, _validation_body(error))
    if status == HTTP_500_INTERNAL_SERVER_ERROR:
        return handle_unexpected(_, error)
    detail, code = str(error.detail), _CODES_BY_STATUS.get(status, "error")
    if status == 413:
        detail = "The request body is larger than this server accepts."
    elif status == 400 and _caused_by_bad_json(error):
        detail, code = f"The request body is not valid JSON: {detail}", "invalid_json"
    return error_response(status, ErrorBody(detail=detail, code=code), headers=error.headers)


def handle_unexpected(_: Request[Any, Any, Any], error: Exception) -> Response[ErrorBody]:
    logger.exception("unexpected error", exc_info=error)
    return error_response(
        HTTP_500_INTERNAL_SERVER_ERROR,
        ErrorBody(detail="The server failed to answer this request.", code="internal_error"),
    )


def _caused_by_bad_json(error: BaseException) -> bool:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, msgspec.DecodeError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _validation_body(error: ValidationException) -> ErrorBody:
    items = [_validation_item(entry) for entry in error.extra or [] if isinstance(entry, dict)]
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


def _join(path: str, field: str) -> str:
    return f"{path}.{field}" if path and field else path or field

"""Tandem's error vocabulary: raised where a fact is known, mapped to HTTP in one place
(``app/api/errors.py``). Each carries the contract's status and code."""

import msgspec


class ErrorItem(msgspec.Struct):
    path: str
    message: str


class TandemError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, detail: str, errors: list[ErrorItem] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class BadRequest(TandemError):
    pass


class InvalidJson(TandemError):
    code = "invalid_json"


class InvalidId(TandemError):
    code = "invalid_id"


class InvalidInput(TandemError):
    code = "invalid_input"


class MessageTooLarge(TandemError):
    code = "message_too_large"


class UnknownCommand(TandemError):
    code = "unknown_command"


class NotFound(TandemError):
    status_code = 404
    code = "not_found"


class TurnInProgress(TandemError):
    status_code = 409
    code = "turn_in_progress"


class RunTerminal(TandemError):
    status_code = 409
    code = "run_terminal"


class RequestInProgress(TandemError):
    """A request with an Idempotency-Key whose first request is still executing."""

    status_code = 409
    code = "request_in_progress"


class IdempotencyKeyReused(TandemError):
    """An Idempotency-Key sent again with a different request."""

    status_code = 422
    code = "idempotency_key_reused"


class DefinitionRejected(TandemError):
    status_code = 422
    code = "invalid_definition"


class InvalidParameter(TandemError):
    """A header or query value the handler checks itself (its path names it)."""

    code = "validation_error"

"""One root error for dtf, with subclasses by meaning.

Each carries an HTTP status so the API turns any of them into a JSON error
without a lookup table, and a message that names the offending value.
"""

from __future__ import annotations


class DtfError(Exception):
    status_code = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidRequest(DtfError):
    status_code = 422


class NotFound(DtfError):
    status_code = 404


class Conflict(DtfError):
    status_code = 409


class Unsatisfiable(DtfError):
    status_code = 422


class InvalidTransition(DtfError):
    status_code = 409


class Unauthorized(DtfError):
    status_code = 401


class Forbidden(DtfError):
    status_code = 403


class CoordinatorUnavailable(DtfError):
    status_code = 503

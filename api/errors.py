"""The errors the service answers with: one JSON shape, ``{"error": {"code", "message"}}``."""

from __future__ import annotations


class ApiError(Exception):
    """A request Baton refuses, with the HTTP status, a stable code and a message for people.

    Attributes:
        status: the HTTP status (a WebSocket sends the same code and message in an error frame).
        code: a stable word clients can switch on (``too_long``, ``rate_limited``, ...).
        message: what went wrong and what to do, in plain English.
        retry_after: seconds to wait before trying again (429 only).
    """

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, object]:
        """The ``error`` object of a response body."""
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.retry_after is not None:
            body["retry_after"] = round(self.retry_after, 1)
        return body

    def headers(self) -> dict[str, str]:
        """Response headers that go with the error (Retry-After for 429)."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after + 0.49)))}


def unauthorized(message: str) -> ApiError:
    """401: no credentials, or they are wrong or expired."""
    return ApiError(401, "unauthorized", message)


def forbidden(message: str) -> ApiError:
    """403: valid credentials, but not for this conversation."""
    return ApiError(403, "forbidden", message)


def not_found(message: str) -> ApiError:
    """404: no such conversation (or other resource)."""
    return ApiError(404, "not_found", message)

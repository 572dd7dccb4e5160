"""One error hierarchy for all of Cairn, each class carrying its stable code and HTTP status.

The HTTP layer maps these to JSON bodies in exactly one place (`kernel.web.error_middleware`);
the SDK maps the JSON bodies back to these classes, so a caller sees the same exception
whether it talks to the database directly or through the API.
"""

from __future__ import annotations

from typing import Any, ClassVar


class CairnError(Exception):
    """Base of every error Cairn raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def within(self, context: str) -> CairnError:
        """The same error with its message prefixed by what was being done (e.g. the SE and
        LFN of a storage call whose own message names only a URL); returns self to re-raise."""
        if not self.message.startswith(context):
            self.message = f"{context}: {self.message}"
            self.args = (self.message,)
        return self

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidInput(CairnError):
    """The request is well-formed JSON but a value breaks a rule (bad LFN, wrong type...)."""

    status = 400
    code = "invalid_input"


class MalformedRequest(InvalidInput):
    """The body is not parseable at all (not JSON, wrong content type)."""

    code = "malformed_request"


class RequestTimeout(CairnError):
    """The request's body did not arrive in time (`body_read_s`)."""

    status = 408
    code = "request_timeout"


class BodyTooLarge(CairnError):
    status = 413
    code = "body_too_large"


class LimitExceeded(CairnError):
    """What the request would store passes a bound on the stored whole (an entry's metadata, say),
    though the request itself is within its own bounds; nothing is written."""

    status = 413
    code = "limit_exceeded"


class Unauthenticated(CairnError):
    """No token, or a token that fails verification."""

    status = 401
    code = "unauthenticated"


class Forbidden(CairnError):
    """A valid identity that may not do this."""

    status = 403
    code = "forbidden"


class NotFound(CairnError):
    status = 404
    code = "not_found"


class Conflict(CairnError):
    """The request contradicts the current state (exists already, wrong state, version race)."""

    status = 409
    code = "conflict"


class QuotaExceeded(CairnError):
    status = 422
    code = "quota_exceeded"


class ServiceUnavailable(CairnError):
    """A dependency (the database, a storage element) is down; retry later."""

    status = 503
    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after: int = 5, details: dict[str, Any] | None = None):
        super().__init__(message, details=details)
        self.retry_after = retry_after


class ConfigurationError(CairnError):
    """Settings that cannot work; raised at start, never during a request."""

    code = "configuration_error"


_BY_CODE: dict[str, type[CairnError]] = {}


def _index(cls: type[CairnError]) -> None:
    _BY_CODE.setdefault(cls.code, cls)
    for sub in cls.__subclasses__():
        _index(sub)


def error_class_for(code: str) -> type[CairnError]:
    """The exception class for a stable error code (used by the SDK on error bodies)."""
    if not _BY_CODE:
        _index(CairnError)
    return _BY_CODE.get(code, CairnError)

"""Typed domain errors.

Domain packages raise these; `api/errors.py` maps each class to an OpenAI-style JSON
response (docs/WIRE.md) in one place. Nothing here knows about HTTP status codes.
"""

from __future__ import annotations


class SluicegateError(Exception):
    """Base of every error that is reported to a client.

    `code` and `param` go to the client verbatim, so the message must never contain a secret.
    """

    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(SluicegateError):
    """A bad parameter or body (400)."""


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class AuthenticationFailed(SluicegateError):
    """Missing, unknown, revoked or expired credential (401)."""

    code = "invalid_api_key"


class PermissionDenied(SluicegateError):
    """Valid credential, but not allowed to do this (403)."""

    code = "permission_denied"


class NotFound(SluicegateError):
    """The named object does not exist or is not visible to the caller (404)."""


class ModelNotFound(NotFound):
    code = "model_not_found"


class Conflict(SluicegateError):
    """The request conflicts with the current state (409)."""

    code = "conflict"


class PayloadTooLarge(SluicegateError):
    code = "payload_too_large"


class RateLimited(SluicegateError):
    """A rate limit refused the request (429, type `requests` or `tokens`)."""

    code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        limit_type: str,
        retry_after_s: float,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.limit_type = limit_type  # "requests" or "tokens" (the OpenAI error `type`)
        self.retry_after_s = retry_after_s
        self.headers = headers or {}


class QuotaExceeded(SluicegateError):
    """The period quota or spend cap is exhausted (429 insufficient_quota)."""

    code = "insufficient_quota"

    def __init__(
        self, message: str, *, retry_after_s: float, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.headers = headers or {}


class Unavailable(SluicegateError):
    """Something the request needs cannot take it now; the same request may succeed after
    `retry_after_s` (503 with `Retry-After`)."""

    code = "service_unavailable"
    retry_after_s = 1.0

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ):
        super().__init__(message, param=param, code=code)
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s


class Overloaded(Unavailable):
    """Every backend is at its queue bound (503)."""

    code = "overloaded"


class GenerationFailed(SluicegateError):
    """The engine failed while running this request, and only this one (500).

    Not a backend outage: the backend keeps serving everyone else, so the router neither
    ejects it nor retries the request elsewhere (where it would fail the same way).
    """

    code = "generation_failed"


class BackendUnavailable(Unavailable):
    """No healthy backend for the model, or the limiter store is down in fail_closed (503)."""

    code = "backend_unavailable"


class DatabaseUnavailable(Unavailable):
    """The database refuses connections, is unreachable, or the pool is exhausted (503)."""

    code = "database_unavailable"
    retry_after_s = 2.0

"""One error hierarchy for the whole gateway.

Every error carries what OpenAI's envelope needs (status, type, code, param) plus what the
proxy needs to act on it (``retry_after``, ``retryable``, ``kind`` for metrics). Errors are
raised, never returned as dicts, and rendered in one place (``proxy/errors.py``).
"""

from __future__ import annotations

from typing import Literal

UpstreamKind = Literal["timeout", "refused", "4xx", "5xx", "malformed", "cut_mid_stream", "rejected"]


class RosettaError(Exception):
    """Base class: an OpenAI-style error with its HTTP status."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        type: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Whether trying again (later, or on another deployment) may succeed."""
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.message!r}, param={self.param!r})"


class InvalidRequest(RosettaError):
    """400: the client sent something wrong; ``param`` names it."""

    status = 400
    type = "invalid_request_error"


class Unsupported(InvalidRequest):
    """400: valid OpenAI, but this backend cannot honour it and ignoring it would change the
    meaning of the request."""

    code = "unsupported_parameter"


class ContextLengthExceeded(InvalidRequest):
    """400: the prompt cannot fit the model's context."""

    code = "context_length_exceeded"


class AuthenticationFailed(RosettaError):
    """401: missing or wrong gateway key."""

    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(RosettaError):
    """403: the key may not use this model or route."""

    status = 403
    type = "permission_error"


class NotFound(RosettaError):
    """404: unknown model or path."""

    status = 404
    type = "invalid_request_error"


class ModelNotFound(NotFound):
    """404: the requested model is not served here."""

    code = "model_not_found"


class MethodNotAllowed(RosettaError):
    """405: the path exists, the method does not."""

    status = 405
    type = "invalid_request_error"


class PayloadTooLarge(RosettaError):
    """413: body over the configured limit."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UnsupportedMediaType(RosettaError):
    """415: the body is not ``application/json``."""

    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class RateLimited(RosettaError):
    """429 raised by the gateway itself (quotas, fair queues)."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    @property
    def retryable(self) -> bool:
        return True


class UpstreamError(RosettaError):
    """The backend failed or answered with an error. ``kind`` classifies it for metrics and
    retry decisions; ``status`` is what the client gets (already mapped)."""

    status = 502
    type = "upstream_error"

    def __init__(self, message: str, *, kind: UpstreamKind = "5xx", **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.kind: UpstreamKind = kind

    @property
    def retryable(self) -> bool:
        return self.status in (429, 502, 503, 504) and self.kind != "cut_mid_stream"


def status_for_upstream(status: int) -> int:
    """Map an upstream HTTP status to the one the client gets.

    Client errors pass through (the backend judged the request); rate limits stay 429;
    529 and other overload signals become 503; timeouts 504; any other 5xx 502."""
    if status in (408, 504, 524):
        return 504
    if status in (503, 529):
        return 503
    if status == 429 or 400 <= status < 500:
        return status
    return 502


def upstream_error(
    status: int,
    message: str,
    *,
    backend_type: str | None = None,
    code: str | None = None,
    retry_after: float | None = None,
    param: str | None = None,
) -> UpstreamError:
    """Build the UpstreamError for an upstream HTTP error status (the usual ``parse_error``)."""
    mapped = status_for_upstream(status)
    kind: UpstreamKind = "4xx" if 400 <= status < 500 else "5xx"
    etype = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "invalid_request_error",
        422: "invalid_request_error",
        429: "rate_limit_error",
    }.get(mapped, "upstream_error" if mapped >= 500 else "invalid_request_error")
    prefix = f"upstream {backend_type} " if backend_type else "upstream "
    return UpstreamError(
        f"{prefix}returned HTTP {status}: {message}" if message else f"{prefix}returned HTTP {status}",
        kind=kind,
        status=mapped,
        type=etype,
        code=code,
        retry_after=retry_after,
        param=param,
    )

"""The one exception hierarchy of exportd.

Every error we raise on purpose derives from `ExportdError`. Each class names the wire status it
maps to (`http_status`, `grpc_code` as the grpc.StatusCode name); the mapping to the wire is done
in one place per transport from these attributes, never ad hoc: gRPC in master/wire_errors.py,
HTTP in master/api/errors.py.
Subsystems add subclasses next to their code, always under one of these.
"""

from __future__ import annotations

from typing import Any


class ExportdError(Exception):
    """Root of every exportd error."""

    http_status: int = 500
    grpc_code: str = "INTERNAL"
    code: str = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class ValidationError(ExportdError):
    """Bad input: a malformed job spec, an unknown field, an impossible setting."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"
    code = "invalid"

    def __init__(self, message: str, *, field: str = "", **details: Any) -> None:
        super().__init__(f"{field}: {message}" if field else message, field=field, **details)
        self.field = field


class NotFound(ExportdError):
    http_status = 404
    grpc_code = "NOT_FOUND"
    code = "not_found"


class Conflict(ExportdError):
    http_status = 409
    grpc_code = "ALREADY_EXISTS"
    code = "conflict"


class Unauthorized(ExportdError):
    http_status = 401
    grpc_code = "UNAUTHENTICATED"
    code = "unauthorized"


class Forbidden(ExportdError):
    http_status = 403
    grpc_code = "PERMISSION_DENIED"
    code = "forbidden"


class PayloadTooLarge(ExportdError):
    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"
    code = "too_large"


class Unavailable(ExportdError):
    """Try again (elsewhere): no leader yet, leadership suspended, a dependency is down."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
    code = "unavailable"


class Fenced(ExportdError):
    """A write or directive from a deposed leader (stale epoch) or a stale task generation."""

    http_status = 409
    grpc_code = "FAILED_PRECONDITION"
    code = "fenced"


class SinkError(ExportdError):
    """A sink failed. `retryable` says whether the same batch may succeed later."""

    http_status = 502
    grpc_code = "UNAVAILABLE"
    code = "sink_error"

    def __init__(self, message: str, *, retryable: bool, **details: Any) -> None:
        super().__init__(message, retryable=retryable, **details)
        self.retryable = retryable


class RecordError(ExportdError):
    """One record could not be processed: it goes to dead-letter with this reason."""

    http_status = 422
    grpc_code = "INVALID_ARGUMENT"
    code = "bad_record"


class ConfigError(ExportdError):
    """Settings that cannot be loaded or make no sense."""

    http_status = 500
    grpc_code = "FAILED_PRECONDITION"
    code = "config"

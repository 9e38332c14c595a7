"""tasks.errors on the gRPC wire, in one place: each class names its status code (`grpc_code`)."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc
import grpc.aio

from tasks.errors import ExportdError


def status_code(exc: ExportdError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.INTERNAL)


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], exc: ExportdError) -> NoReturn:
    await context.abort(status_code(exc), exc.message)
    raise AssertionError("unreachable: abort raises")

"""structlog, configured once per process: JSON lines for services, a readable console in dev.

Bind ids with `structlog.contextvars.bind_contextvars(server=..., epoch=...)` or
`log.bind(task=...)`; they appear on every line that follows.
"""

from __future__ import annotations

import logging
import sys

import structlog

from tasks.redact import redact_processor

_configured = False


def configure_logging(*, json: bool = True, level: str = "info") -> None:
    global _configured
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    logging.basicConfig(stream=sys.stderr, level=numeric, format="%(message)s")
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            redact_processor,   # a secret logged by mistake is masked (tasks/redact.py)
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=not _configured,
    )
    _configured = True


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger

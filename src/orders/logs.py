"""Logging set-up: one handler for the `orders` loggers and uvicorn's, text or JSON, every
line carrying the request id of the request it belongs to (and its trace id when traced)."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final, Literal

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
# Set by the tracing middleware while a traced request runs: 32 hex digits.
trace_id: ContextVar[str | None] = ContextVar("trace_id", default=None)

# Attributes every LogRecord has; anything else was passed through `extra=`. uvicorn adds
# `color_message`, an ANSI-coloured copy of the message.
_STANDARD: Final = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "color_message",
}


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            current = request_id.get()
            if current is not None:
                record.request_id = current
        if not hasattr(record, "trace_id"):
            traced = trace_id.get()
            if traced is not None:
                record.trace_id = traced
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(
            (key, value)
            for key, value in vars(record).items()
            if key not in _STANDARD and value is not None
        )
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [request id] message`, with `[-]` outside a request."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
            defaults={"request_id": "-"},
        )


def configure_logging(level: str, fmt: Literal["text", "json"]) -> None:
    """Send the `orders` loggers and uvicorn's to stderr in `fmt`, at `level`; calling it
    again replaces the handler.

    uvicorn's access line is dropped: the request middleware writes one per request with
    more in it, and a second line per request in another format would only confuse.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_RequestIdFilter())
    for name in ("orders", "uvicorn"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    # uvicorn's config sets its own level here; inherit ours instead.
    logging.getLogger("uvicorn.error").setLevel(logging.NOTSET)
    access = logging.getLogger("uvicorn.access")
    for old in list(access.handlers):
        access.removeHandler(old)
    access.propagate = False

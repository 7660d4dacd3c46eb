"""The log formatters: text for people, one JSON object per line for machines."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Literal

import pytest

from orders.logs import configure_logging, request_id

CONFIGURED = ("orders", "uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture
def orders_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """The `orders` logger as configure_logging leaves it, writing to a buffer; the loggers
    it configures are put back afterwards."""
    loggers = [logging.getLogger(name) for name in CONFIGURED]
    saved = [(list(each.handlers), each.level, each.propagate) for each in loggers]
    stream = io.StringIO()
    try:
        yield loggers[0], stream
    finally:
        for each, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            each.handlers[:] = handlers
            each.setLevel(level)
            each.propagate = propagate


def configure(logger: logging.Logger, stream: io.StringIO, fmt: Literal["text", "json"]) -> None:
    configure_logging("INFO", fmt)
    [handler] = logger.handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)


def test_text_lines_carry_the_request_id_or_a_dash(
    orders_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = orders_logger
    configure(logger, stream, "text")

    logging.getLogger("orders.app").info("outside any request")
    token = request_id.set("req-7")
    try:
        logging.getLogger("orders.access").info("GET /orders 200")
    finally:
        request_id.reset(token)

    outside, inside = stream.getvalue().splitlines()
    assert re.fullmatch(r"\S+ \S+ INFO orders\.app \[-\] outside any request", outside)
    assert re.fullmatch(r"\S+ \S+ INFO orders\.access \[req-7\] GET /orders 200", inside)


def test_json_lines_carry_extras_the_request_id_and_the_exception(
    orders_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = orders_logger
    configure(logger, stream, "json")

    logging.getLogger("orders.app").info("outside any request")
    token = request_id.set("req-8")
    try:
        logging.getLogger("orders.access").info("done", extra={"status": 201, "path": "/x"})
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("orders.errors").exception("failed")
    finally:
        request_id.reset(token)

    outside, access, error = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "request_id" not in outside
    assert outside["message"] == "outside any request"
    assert access["request_id"] == "req-8"
    assert (access["status"], access["path"], access["level"]) == (201, "/x", "INFO")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", access["time"])
    assert error["level"] == "ERROR"
    assert error["exception"].startswith("Traceback")
    assert error["exception"].endswith("ValueError: boom")


def test_the_orders_loggers_do_not_propagate_or_pile_up_handlers(
    orders_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, _ = orders_logger
    configure_logging("WARNING", "text")
    configure_logging("INFO", "json")

    assert len(logger.handlers) == 1
    assert logger.level == logging.INFO
    assert logger.propagate is False


def test_uvicorn_speaks_through_the_same_handler_and_its_access_line_is_dropped(
    orders_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = orders_logger
    # What uvicorn's own logging config leaves behind before the app is built.
    logging.getLogger("uvicorn").addHandler(logging.StreamHandler(io.StringIO()))
    logging.getLogger("uvicorn.error").setLevel(logging.INFO)
    access = logging.getLogger("uvicorn.access")
    access.addHandler(logging.StreamHandler(io.StringIO()))
    configure(logger, stream, "json")

    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 42, extra={"color_message": "\x1b[36m42\x1b[0m"}
    )
    logging.getLogger("uvicorn.error").debug("below the configured level")
    access.info('127.0.0.1:5000 - "GET /orders HTTP/1.1" 200')

    [line] = (json.loads(line) for line in stream.getvalue().splitlines())
    assert line["logger"] == "uvicorn.error"
    assert line["message"] == "Started server process [42]"
    assert "color_message" not in line
    # uvicorn logs its access line only when the logger has somewhere to send it.
    assert not access.hasHandlers()

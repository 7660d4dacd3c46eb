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


@pytest.fixture
def orders_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """The `orders` logger as configure_logging leaves it, writing to a buffer."""
    logger = logging.getLogger("orders")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    stream = io.StringIO()
    try:
        yield logger, stream
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


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

"""The one place where errors become HTTP responses, all shaped `{"detail": ...}`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from pydantic import ValidationError
from pydantic_core import to_json
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from orders.domain import (
    ActionInProgress,
    InvalidTransition,
    OrderNotFound,
    OutcomePending,
    VersionMismatch,
)
from orders.service.idempotency import AlreadyAnswered, KeyInFlight, KeyReused
from orders.service.ports import (
    CollaboratorBadAnswer,
    CollaboratorError,
    CollaboratorTimeout,
    CollaboratorUnavailable,
    PaymentRefused,
    StorageUnavailable,
)
from orders.web.schemas import Error, InvalidRequest
from orders.web.tokens import KeysUnavailable

RETRY_AFTER_SECONDS: Final = "5"


@dataclass(frozen=True, slots=True)
class ErrorStatus:
    """What an error status means in this API, an example of its `detail`, the shape of its
    body, and the response headers that come with it."""

    description: str
    example: str | list[dict[str, Any]]
    body: type[Error] | type[InvalidRequest] = Error
    headers: tuple[str, ...] = ()


# Every error status the API answers with on purpose; the handlers below produce them.
ERROR_STATUSES: Final[Mapping[int, ErrorStatus]] = {
    400: ErrorStatus(
        "Malformed JSON body (or a key repeated within one JSON object), or a malformed"
        " `Idempotency-Key`.",
        "Malformed JSON body",
    ),
    401: ErrorStatus(
        "Missing or invalid bearer token.",
        "Not authenticated: send Authorization: Bearer <token>",
        headers=("WWW-Authenticate",),
    ),
    402: ErrorStatus(
        "The payment was refused; nothing was charged.",
        "The payment was refused; the order was not charged",
    ),
    404: ErrorStatus(
        "No such order for the caller (another user's order answers the same).",
        "Order not found",
    ),
    409: ErrorStatus(
        "Not allowed in the order's current status; or for now only, with `Retry-After`:"
        " another payment or cancellation runs, the outcome of a payment, schedule or refund"
        " is not known yet, or the first request with this `Idempotency-Key` still runs.",
        "cannot update an order in status 'paid'",
        headers=("Retry-After",),
    ),
    412: ErrorStatus(
        "The order has changed: `If-Match` names none of its current entity tags.",
        "The order has changed since the version given in If-Match",
    ),
    413: ErrorStatus("Request body too large.", "Request body larger than 65536 bytes"),
    415: ErrorStatus("The body is not application/json.", "Content-Type must be application/json"),
    422: ErrorStatus(
        "The body, path or query failed validation, the `after` cursor is not one this list"
        " issued, or the `Idempotency-Key` was used before for a different request.",
        [
            {
                "loc": ["body", "order", 0, "size"],
                "msg": "Input should be 'small', 'medium' or 'big'",
                "type": "enum",
            }
        ],
        body=InvalidRequest,
    ),
    502: ErrorStatus(
        "Payments or kitchen answered with an error.",
        "The payments service answered with an error",
    ),
    503: ErrorStatus(
        "The database, payments or kitchen is unavailable; retry after `Retry-After`.",
        "The database is unavailable, try again shortly",
        headers=("Retry-After",),
    ),
    504: ErrorStatus(
        "Payments or kitchen did not answer in time.",
        "The kitchen service did not answer in time",
    ),
}


class RequestInvalid(Exception):
    """The request's body, path or query failed validation (422)."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__("request validation failed")
        self.problems = problems

    @classmethod
    def from_validation(cls, error: ValidationError, where: str) -> RequestInvalid:
        return cls(problems(error.errors(include_url=False, include_input=False), where))


def problems(errors: Iterable[Mapping[str, Any]], where: str) -> list[dict[str, Any]]:
    """pydantic errors as `{"loc", "msg", "type"}`, `loc` starting with body/path/query."""
    return [
        {"loc": [where, *error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in errors
    ]


def error_response(
    status_code: int, detail: Any, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        to_json({"detail": detail}),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def _http_exception(_: Request, exc: Exception) -> Response:
    http = cast(HTTPException, exc)
    return error_response(http.status_code, http.detail, http.headers)


def _request_invalid(_: Request, exc: Exception) -> Response:
    return error_response(422, cast(RequestInvalid, exc).problems)


def _not_found(_: Request, exc: Exception) -> Response:
    return error_response(404, "Order not found")


def _conflict(_: Request, exc: Exception) -> Response:
    return error_response(409, str(exc))


def _payment_refused(_: Request, exc: Exception) -> Response:
    return error_response(402, "The payment was refused; the order was not charged")


_COLLABORATOR_STATUS: Final = {
    CollaboratorBadAnswer: 502,
    CollaboratorUnavailable: 503,
    CollaboratorTimeout: 504,
}


def _collaborator(_: Request, exc: Exception) -> Response:
    failure = cast(CollaboratorError, exc)
    status = _COLLABORATOR_STATUS.get(type(failure), 502)
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if status == 503 else None
    return error_response(status, f"The {failure.service} service {failure.reason}", headers)


def _keys_unavailable(_: Request, exc: Exception) -> Response:
    return error_response(
        503,
        "The keys to verify tokens with are unavailable, try again shortly",
        {"Retry-After": RETRY_AFTER_SECONDS},
    )


def _storage_unavailable(_: Request, exc: Exception) -> Response:
    return error_response(
        503, "The database is unavailable, try again shortly", {"Retry-After": RETRY_AFTER_SECONDS}
    )


def _version_mismatch(_: Request, exc: Exception) -> Response:
    return error_response(412, "The order has changed since the version given in If-Match")


def _key_reused(_: Request, exc: Exception) -> Response:
    return error_response(
        422,
        [
            {
                "loc": ["header", "Idempotency-Key"],
                "msg": str(exc),
                "type": "idempotency_key_reused",
            }
        ],
    )


# A conflict that passes by itself is answered with when to look again: a request in flight
# (another pay or cancel, or the first request with a key) ends within moments; an outcome
# not known yet waits for the reconciler's next pass.
_IN_FLIGHT_RETRY_AFTER: Final = {"Retry-After": "1"}


def _in_flight(_: Request, exc: Exception) -> Response:
    return error_response(409, str(exc), _IN_FLIGHT_RETRY_AFTER)


def _outcome_pending(_: Request, exc: Exception) -> Response:
    return error_response(409, str(exc), {"Retry-After": RETRY_AFTER_SECONDS})


def _replay(_: Request, exc: Exception) -> Response:
    answer = cast(AlreadyAnswered, exc).answer
    headers = {"Idempotent-Replayed": "true"}
    if answer.location is not None:
        headers["Location"] = answer.location
    if answer.etag is not None:
        headers["ETag"] = answer.etag
    media_type = "application/json" if answer.body else None
    return Response(answer.body, answer.status, headers, media_type=media_type)


EXCEPTION_HANDLERS: Final = {
    HTTPException: _http_exception,
    RequestInvalid: _request_invalid,
    OrderNotFound: _not_found,
    InvalidTransition: _conflict,
    ActionInProgress: _in_flight,
    OutcomePending: _outcome_pending,
    PaymentRefused: _payment_refused,
    CollaboratorError: _collaborator,
    StorageUnavailable: _storage_unavailable,
    KeysUnavailable: _keys_unavailable,
    VersionMismatch: _version_mismatch,
    KeyReused: _key_reused,
    KeyInFlight: _in_flight,
    AlreadyAnswered: _replay,
}

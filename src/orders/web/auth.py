"""Bearer authentication as a Starlette AuthenticationBackend (docs/api.md, "Who sees what").

The backend is mounted only around the order routes, so health and docs stay open without a
path allow-list, and every order route is closed without a per-endpoint check.
"""

from __future__ import annotations

from typing import cast

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from orders.web.errors import error_response
from orders.web.tokens import InvalidToken, TokenVerifier


class MissingToken(AuthenticationError):
    """No bearer token was presented."""


class BadToken(AuthenticationError):
    """A bearer token was presented but is not acceptable."""


class Caller(BaseUser):
    """The authenticated customer; `identity` is the token's `sub`."""

    def __init__(self, subject: str) -> None:
        self.subject = subject

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.subject

    @property
    def identity(self) -> str:
        return self.subject


class BearerTokenBackend(AuthenticationBackend):
    """Reads `Authorization: Bearer <JWT>` and verifies it with the app's TokenVerifier."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser]:
        header = conn.headers.get("authorization")
        if header is None:
            raise MissingToken("Not authenticated: send Authorization: Bearer <token>")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise MissingToken("Not authenticated: the Authorization scheme must be Bearer")
        token = token.strip()
        if not token:
            raise BadToken("Invalid token: the bearer token is empty")
        verifier = cast(TokenVerifier, conn.state.verifier)
        try:
            claims = await verifier.verify(token)
        except InvalidToken as error:
            raise BadToken(f"Invalid token: {error}") from None
        return AuthCredentials(["orders"]), Caller(claims["sub"])


def unauthorized(conn: HTTPConnection, exc: Exception) -> Response:
    """401 with the RFC 6750 challenge; `error="invalid_token"` only when a token was sent."""
    challenge = 'Bearer error="invalid_token"' if isinstance(exc, BadToken) else "Bearer"
    return error_response(401, str(exc), {"WWW-Authenticate": challenge})


def caller(request: Request) -> str:
    """The `sub` of the authenticated caller of an order route."""
    return cast(Caller, request.user).subject

"""Bearer token verification with python-jose (docs/adr/0003-token-verification.md).

The token's header never picks the algorithm on its own: it must be one of the configured
asymmetric algorithms, and the key it is checked with is built for exactly that algorithm
from a public key. An HMAC token "signed" with the public key (CVE-2024-33663 and its DER
variant) is therefore refused before any key is touched.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import httpx
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jose import jwk, jwt
from jose.backends.base import Key
from jose.exceptions import ExpiredSignatureError, JOSEError, JWTClaimsError

from orders.settings import ConfigurationError, Settings

logger = logging.getLogger(__name__)

_SEGMENT: Final = re.compile(r"^[A-Za-z0-9_-]+$")
_MAX_TOKEN_LENGTH: Final = 8192
# A real header is {"alg", "typ", "kid"}: well under this.
_MAX_HEADER_LENGTH: Final = 1024
VERIFIED_CACHE_SIZE: Final = 4096
# `sub` becomes the owner of orders, in the database and in logs: an identifier, not a text.
MAX_SUBJECT_LENGTH: Final = 255
# Control, format (bidi overrides, zero-width) and lone surrogate characters (which no
# encoding accepts).
_UNFIT_IN_SUBJECT: Final = frozenset({"Cc", "Cf", "Cs"})


class InvalidToken(Exception):
    """The token was given but cannot be trusted; the message says why, never the token."""


class KeysUnavailable(Exception):
    """The JWKS endpoint could not be read, so no token can be checked right now."""


class KeySource(Protocol):
    async def key_for(self, kid: str | None, algorithm: str) -> Key | None:
        """The verification key for this key id and algorithm, or None if there is none."""
        ...


def _construct(key_data: Any, algorithm: str) -> Key | None:
    try:
        return jwk.construct(key_data, algorithm)
    except JOSEError:
        return None


_CURVES: Final = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
# The same curves as a JWK's `crv` names them (RFC 7518 §6.2.1.1).
_JWK_CURVES: Final = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


def _fits(public_key: PublicKeyTypes, algorithm: str) -> bool:
    """Whether the key's type (and curve) is the one `algorithm` signs with."""
    if algorithm.startswith("RS"):
        return isinstance(public_key, rsa.RSAPublicKey)
    return isinstance(
        public_key, ec.EllipticCurvePublicKey
    ) and public_key.curve.name == _CURVES.get(algorithm)


class StaticKeys:
    """One PEM public key, with a jose key object built once per accepted algorithm."""

    def __init__(
        self, pem: str, algorithms: Sequence[str], *, setting: str = "JWT_PUBLIC_KEY"
    ) -> None:
        """`setting` names where the key came from, for the start-up error."""
        try:
            public_key = load_pem_public_key(pem.encode())
        except (ValueError, TypeError):
            raise ConfigurationError(
                f"invalid configuration: {setting}: not a PEM public key"
            ) from None
        self._keys = {
            algorithm: key
            for algorithm in algorithms
            if _fits(public_key, algorithm) and (key := _construct(pem, algorithm)) is not None
        }
        if not self._keys:
            raise ConfigurationError(
                f"invalid configuration: {setting}: the key fits none of JWT_ALGORITHMS "
                f"({', '.join(algorithms)})"
            )

    async def key_for(self, kid: str | None, algorithm: str) -> Key | None:
        return self._keys.get(algorithm)


class JwksTooLarge(Exception):
    """The JWKS endpoint sent more than the size cap allows."""


class JwksKeys:
    """Keys from a JWKS URL: cached, refreshed when stale or when a token names an unknown
    `kid`, but never fetched more often than `min_refresh` seconds apart.

    A fetch reads at most `max_bytes` and takes at most `fetch_timeout` seconds in all
    (connect, headers and body): requests waiting for the keys wait no longer than that.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        *,
        cache_seconds: float,
        min_refresh_seconds: float,
        max_bytes: int = 256 * 1024,
        fetch_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._url = url
        self._cache_seconds = cache_seconds
        self._min_refresh = min_refresh_seconds
        self._max_bytes = max_bytes
        self._fetch_timeout = fetch_timeout
        self._clock = clock
        self._jwks: dict[str | None, dict[str, Any]] = {}
        self._built: dict[tuple[str | None, str], Key | None] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str | None, algorithm: str) -> Key | None:
        if self._fetched_at is None or self._age() >= self._cache_seconds or kid not in self._jwks:
            await self._refresh()
        if not self._jwks:
            raise KeysUnavailable("the identity provider's keys are unavailable")
        if kid not in self._jwks:
            return None
        if (kid, algorithm) not in self._built:
            self._built[(kid, algorithm)] = self._build(self._jwks[kid], algorithm)
        return self._built[(kid, algorithm)]

    def _age(self) -> float:
        return self._clock() - (self._fetched_at or 0.0)

    @staticmethod
    def _build(data: dict[str, Any], algorithm: str) -> Key | None:
        if data.get("alg", algorithm) != algorithm or data.get("use", "sig") != "sig":
            return None
        # The key's type and curve must be the algorithm's, as for a PEM key: an ES256 token
        # is never checked with a P-384 key, nor an RS256 token with an EC key.
        if algorithm.startswith("RS"):
            if data.get("kty") != "RSA":
                return None
        elif data.get("kty") != "EC" or data.get("crv") != _JWK_CURVES.get(algorithm):
            return None
        return _construct(data, algorithm)

    async def _fetch(self) -> Any:
        """The JWKS document, read within the deadline and the size cap."""
        async with (
            asyncio.timeout(self._fetch_timeout),
            self._client.stream("GET", self._url) as response,
        ):
            response.raise_for_status()
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self._max_bytes:
                raise JwksTooLarge(f"Content-Length {declared} over {self._max_bytes} bytes")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self._max_bytes:
                    raise JwksTooLarge(f"more than {self._max_bytes} bytes")
        return json.loads(body)

    async def _refresh(self) -> None:
        async with self._lock:
            if self._fetched_at is not None and self._age() < self._min_refresh:
                # Fetched moments ago (perhaps while this request waited for the lock).
                return
            self._fetched_at = self._clock()
            try:
                keys = (await self._fetch())["keys"]
                jwks = {key.get("kid"): key for key in keys if isinstance(key, dict)}
            except TimeoutError:
                logger.warning(
                    "could not fetch the JWKS from %s: no complete answer within %g s",
                    self._url,
                    self._fetch_timeout,
                )
                return
            except JwksTooLarge as error:
                logger.warning("refused the JWKS from %s: %s", self._url, error)
                return
            except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
                logger.warning("could not fetch the JWKS from %s", self._url, exc_info=True)
                return
            if len(jwks) == 1:
                # A single key also serves tokens that name no kid.
                jwks.setdefault(None, next(iter(jwks.values())))
            self._jwks, self._built = jwks, {}


def _segments_ok(token: str) -> bool:
    parts = token.split(".")
    return len(parts) == 3 and all(_SEGMENT.match(part) for part in parts)


def _header(token: str) -> dict[str, Any]:
    segment = token.split(".", 1)[0]
    if len(segment) > _MAX_HEADER_LENGTH:
        raise InvalidToken("malformed token")
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        # RecursionError: deeply nested JSON, which the length cap alone does not rule out.
        raise InvalidToken("malformed token") from None
    if not isinstance(header, dict):
        raise InvalidToken("malformed token")
    return header


class _Verified:
    """A token that passed every check: its claims and what it was checked with."""

    __slots__ = ("algorithm", "claims", "expires", "key", "kid", "not_before")

    def __init__(self, claims: dict[str, Any], kid: str | None, algorithm: str, key: Key) -> None:
        self.claims = claims
        self.kid = kid
        self.algorithm = algorithm
        self.key = key
        # jose has checked that these are integers (or absent).
        self.expires = int(claims["exp"]) if "exp" in claims else None
        self.not_before = int(claims["nbf"]) if "nbf" in claims else None


class TokenVerifier:
    """Checks signature, `exp`, `nbf`, `iat`, `aud`, `iss` and `sub`; returns the claims.

    Verifying a token (JSON parsing, claim checks and an RSA signature check in python-jose)
    costs more than the rest of a simple request, and clients send the same token many
    times. So the tokens that passed are remembered (at most `cache_size`, oldest dropped
    first): the same token, byte for byte, is accepted again without repeating the signature
    check, as long as it is still within `exp` and `nbf` now and its key is still the one
    the key source gives for its `kid` and algorithm. Refused tokens are never remembered.
    """

    def __init__(
        self,
        keys: KeySource,
        *,
        algorithms: Sequence[str],
        audience: str,
        issuer: str,
        leeway_seconds: int,
        cache_size: int = VERIFIED_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._algorithms = frozenset(algorithms)
        self._audience = audience
        self._issuer = issuer
        self._options = {
            "require_exp": True,
            "require_aud": True,
            "require_iss": True,
            "require_sub": True,
            "verify_at_hash": False,
            "leeway": leeway_seconds,
        }
        self._leeway = leeway_seconds
        self._clock = clock
        self._cache_size = cache_size
        self._verified: dict[str, _Verified] = {}

    @classmethod
    def from_settings(cls, settings: Settings, keys: KeySource) -> TokenVerifier:
        return cls(
            keys,
            algorithms=settings.jwt_algorithms,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway_seconds=settings.jwt_leeway_seconds,
        )

    async def verify(self, token: str) -> dict[str, Any]:
        verified = self._verified.get(token)
        if verified is not None:
            key = await self._keys.key_for(verified.kid, verified.algorithm)
            if key is verified.key:
                self._check_times(token, verified)
                return dict(verified.claims)
            # The key it was checked with is gone or replaced: check it again from scratch.
            self._verified.pop(token, None)
        claims, kid, algorithm, key = await self._decode(token)
        self._remember(token, _Verified(dict(claims), kid, algorithm, key))
        return claims

    def _check_times(self, token: str, verified: _Verified) -> None:
        """`exp` and `nbf` of a token verified earlier, against the clock now (as jose does)."""
        now = int(self._clock())
        if verified.expires is not None and verified.expires < now - self._leeway:
            self._verified.pop(token, None)
            raise InvalidToken("token expired")
        if verified.not_before is not None and verified.not_before > now + self._leeway:
            self._verified.pop(token, None)
            raise InvalidToken("invalid claims: The token is not yet valid (nbf)")

    def _remember(self, token: str, verified: _Verified) -> None:
        if self._cache_size <= 0:
            return
        if len(self._verified) >= self._cache_size:
            # Oldest first: tokens are short-lived and re-verifying one is merely slower.
            del self._verified[next(iter(self._verified))]
        self._verified[token] = verified

    async def _decode(self, token: str) -> tuple[dict[str, Any], str | None, str, Key]:
        """Verify the token fully: the claims, and the key id, algorithm and key used."""
        if len(token) > _MAX_TOKEN_LENGTH or not _segments_ok(token):
            raise InvalidToken("malformed token")
        header = _header(token)
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            raise InvalidToken("token algorithm not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("malformed token")
        key = await self._keys.key_for(kid, algorithm)
        if key is None:
            raise InvalidToken("unknown signing key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options=self._options,
            )
        except ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except JWTClaimsError as error:
            raise InvalidToken(f"invalid claims: {error}") from None
        except JOSEError as error:
            # jose reports a missing required claim as a plain JWTError; its messages are
            # fixed strings, never parts of the token.
            message = str(error)
            if message.startswith("missing required key"):
                raise InvalidToken(f"invalid claims: {message}") from None
            if "Signature verification failed" in message:
                raise InvalidToken("invalid token signature") from None
            raise InvalidToken(f"invalid token: {message}") from None
        self._check_issued_at(claims)
        _check_subject(claims.get("sub"))
        return claims, kid, algorithm, key

    def _check_issued_at(self, claims: dict[str, Any]) -> None:
        # jose checks only that `iat` is a number; a token issued in the future is not one
        # this issuer made with a sane clock.
        issued_at = claims.get("iat")
        if issued_at is not None and issued_at > self._clock() + self._leeway:
            raise InvalidToken("invalid claims: iat is in the future")


def _check_subject(subject: Any) -> None:
    if not isinstance(subject, str) or not subject:
        raise InvalidToken("invalid claims: sub must be a non-empty string")
    if len(subject) > MAX_SUBJECT_LENGTH:
        raise InvalidToken(f"invalid claims: sub is longer than {MAX_SUBJECT_LENGTH} characters")
    if any(unicodedata.category(char) in _UNFIT_IN_SUBJECT for char in subject):
        raise InvalidToken("invalid claims: sub holds control characters")

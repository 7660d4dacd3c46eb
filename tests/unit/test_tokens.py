"""Token verification: every way a token can be wrong, including known python-jose attacks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from jose import jwk, jwt

from orders.settings import ConfigurationError
from orders.web.tokens import InvalidToken, JwksKeys, KeysUnavailable, StaticKeys, TokenVerifier
from orders_dev.devtoken import generate_key_pair

AUD = "orders"
ISS = "https://issuer.test"
PRIVATE, PUBLIC = generate_key_pair()
OTHER_PRIVATE, OTHER_PUBLIC = generate_key_pair()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "alice", "aud": AUD, "iss": ISS, "iat": now, "exp": now + 300}
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def sign(payload: dict[str, Any], key: bytes = PRIVATE, **kwargs: Any) -> str:
    return jwt.encode(payload, key.decode(), algorithm=kwargs.pop("algorithm", "RS256"), **kwargs)


def forge(header: dict[str, Any], payload: dict[str, Any], secret: bytes, digest: Any) -> str:
    """A token whose HMAC 'signature' uses `secret`, built by hand as an attacker would."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(secret, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"


def verifier(keys: Any = None, algorithms: tuple[str, ...] = ("RS256",)) -> TokenVerifier:
    return TokenVerifier(
        keys or StaticKeys(PUBLIC.decode(), algorithms),
        algorithms=algorithms,
        audience=AUD,
        issuer=ISS,
        leeway_seconds=10,
    )


async def refused(token: str, keys: Any = None) -> str:
    with pytest.raises(InvalidToken) as caught:
        await verifier(keys).verify(token)
    message = str(caught.value)
    if token:
        assert token not in message
    return message


async def test_a_valid_token_gives_its_claims() -> None:
    verified = await verifier().verify(sign(claims()))

    assert verified["sub"] == "alice"


async def test_leeway_accepts_a_token_that_just_expired() -> None:
    token = sign(claims(exp=int(time.time()) - 5))

    assert (await verifier().verify(token))["sub"] == "alice"


# Times are offsets from the moment the test runs: tokens are signed then, not at collection.
@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": -60}, "expired"),
        ({"nbf": 600}, "invalid claims"),
        ({"aud": "someone-else"}, "invalid claims"),
        ({"iss": "https://evil.test"}, "invalid claims"),
        ({"exp": None}, "invalid claims"),
        ({"aud": None}, "invalid claims"),
        ({"iss": None}, "invalid claims"),
        ({"sub": None}, "invalid claims"),
        ({"sub": ""}, "invalid claims"),
        ({"iat": "yesterday"}, "invalid claims"),
    ],
    ids=[
        "expired",
        "not-yet-valid",
        "wrong-audience",
        "wrong-issuer",
        "no-exp",
        "no-aud",
        "no-iss",
        "no-sub",
        "empty-sub",
        "bad-iat",
    ],
)
async def test_claims_are_checked(overrides: dict[str, Any], reason: str) -> None:
    now = int(time.time())
    for moment in ("exp", "nbf"):
        if isinstance(overrides.get(moment), int):
            overrides = {**overrides, moment: now + overrides[moment]}

    assert reason in await refused(sign(claims(**overrides)))


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d", "a.b.", "..", "a b.c.d", "ab$.cd.ef", "e30.e30.e30", "W10.e30.x"],
)
async def test_malformed_tokens_are_refused(token: str) -> None:
    assert await refused(token)


@pytest.mark.parametrize("depth", [50, 5000])
async def test_a_deeply_nested_header_is_refused(depth: int) -> None:
    header = b64(b"[" * depth + b"]" * depth)

    assert await refused(f"{header}.e30.c2ln") == "malformed token"


async def test_alg_none_is_refused() -> None:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims()).encode())

    assert "algorithm" in await refused(f"{header}.{body}.unsigned")
    assert await refused(f"{header}.{body}.")


def public_der() -> bytes:
    key = serialization.load_pem_public_key(PUBLIC)
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    ("alg", "digest"),
    [("HS256", hashlib.sha256), ("HS384", hashlib.sha384), ("HS512", hashlib.sha512)],
)
@pytest.mark.parametrize("encoding", ["pem", "der"])
async def test_hmac_signed_with_the_public_key_is_refused(
    alg: str, digest: Any, encoding: str
) -> None:
    secret = PUBLIC if encoding == "pem" else public_der()
    token = forge({"alg": alg, "typ": "JWT"}, claims(), secret, digest)

    assert "algorithm" in await refused(token)


async def test_a_token_from_another_key_is_refused() -> None:
    assert "signature" in await refused(sign(claims(), OTHER_PRIVATE))


async def test_a_tampered_payload_is_refused() -> None:
    header, _, signature = sign(claims()).split(".")
    forged_body = b64(json.dumps(claims(sub="mallory")).encode())

    assert "signature" in await refused(f"{header}.{forged_body}.{signature}")


async def test_an_algorithm_outside_the_configured_list_is_refused() -> None:
    token = sign(claims(), algorithm="RS512")

    assert "algorithm" in await refused(token)


async def test_several_algorithms_each_use_their_own_key_object() -> None:
    algorithms = ("RS256", "RS512")
    accepting = verifier(StaticKeys(PUBLIC.decode(), algorithms), algorithms)

    for algorithm in algorithms:
        token = sign(claims(), algorithm=algorithm)
        assert (await accepting.verify(token))["sub"] == "alice"


async def test_ec_keys_work_for_es256() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    es = verifier(StaticKeys(pem.decode(), ("ES256",)), ("ES256",))

    assert (await es.verify(sign(claims(), private_pem, algorithm="ES256")))["sub"] == "alice"


def test_a_key_that_is_not_pem_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="JWT_PUBLIC_KEY"):
        StaticKeys("not a key", ("RS256",))


def test_a_private_key_is_not_accepted_as_the_public_key() -> None:
    with pytest.raises(ConfigurationError, match="JWT_PUBLIC_KEY"):
        StaticKeys(PRIVATE.decode(), ("RS256",))


def test_a_key_that_fits_no_algorithm_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="fits none"):
        StaticKeys(PUBLIC.decode(), ("ES256",))


class FakeIssuer:
    """A JWKS endpoint whose keys can rotate; it counts how often it is asked."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        self.fail = False

    def publish(self, kid: str, public_pem: bytes) -> None:
        key = jwk.construct(public_pem.decode(), "RS256").to_dict()
        self.keys.append({**key, "kid": kid, "use": "sig"})

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        if self.fail:
            return httpx.Response(503)
        return httpx.Response(200, json={"keys": self.keys})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def jwks_keys(issuer: FakeIssuer, clock: Clock) -> JwksKeys:
    client = httpx.AsyncClient(transport=httpx.MockTransport(issuer.handler))
    return JwksKeys(
        client,
        "https://issuer.test/.well-known/jwks.json",
        cache_seconds=600,
        min_refresh_seconds=30,
        clock=clock,
    )


async def test_jwks_keys_are_fetched_once_and_cached() -> None:
    issuer, clock = FakeIssuer(), Clock()
    issuer.publish("k1", PUBLIC)
    keys = jwks_keys(issuer, clock)

    for _ in range(5):
        await verifier(keys).verify(sign(claims(), headers={"kid": "k1"}))

    assert issuer.fetches == 1


async def test_jwks_rotation_picks_up_a_new_kid() -> None:
    issuer, clock = FakeIssuer(), Clock()
    issuer.publish("k1", PUBLIC)
    keys = jwks_keys(issuer, clock)
    await verifier(keys).verify(sign(claims(), headers={"kid": "k1"}))

    issuer.publish("k2", OTHER_PUBLIC)
    clock.now += 31
    verified = await verifier(keys).verify(sign(claims(), OTHER_PRIVATE, headers={"kid": "k2"}))

    assert verified["sub"] == "alice"
    assert issuer.fetches == 2


async def test_unknown_kids_cannot_hammer_the_issuer() -> None:
    issuer, clock = FakeIssuer(), Clock()
    issuer.publish("k1", PUBLIC)
    keys = jwks_keys(issuer, clock)

    for n in range(50):
        assert "unknown signing key" in await refused(
            sign(claims(), headers={"kid": f"bogus-{n}"}), keys
        )

    assert issuer.fetches == 1
    clock.now += 31
    await refused(sign(claims(), headers={"kid": "bogus-late"}), keys)
    assert issuer.fetches == 2


async def test_stale_jwks_are_refreshed_and_kept_when_the_issuer_fails() -> None:
    issuer, clock = FakeIssuer(), Clock()
    issuer.publish("k1", PUBLIC)
    keys = jwks_keys(issuer, clock)
    await verifier(keys).verify(sign(claims(), headers={"kid": "k1"}))

    issuer.fail = True
    clock.now += 601
    verified = await verifier(keys).verify(sign(claims(), headers={"kid": "k1"}))

    assert verified["sub"] == "alice"
    assert issuer.fetches == 2


async def test_a_jwks_key_for_another_algorithm_is_not_used() -> None:
    issuer, clock = FakeIssuer(), Clock()
    issuer.publish("k1", PUBLIC)
    issuer.keys[0]["alg"] = "RS512"
    keys = jwks_keys(issuer, clock)

    assert "unknown signing key" in await refused(sign(claims(), headers={"kid": "k1"}), keys)


# --- hardening: iat, sub, the JWKS fetch and the JWKS key's curve ----------------------------


async def test_a_token_issued_in_the_future_is_refused() -> None:
    now = int(time.time())

    assert "iat is in the future" in await refused(sign(claims(iat=now + 10**6)))
    assert "iat is in the future" in await refused(sign(claims(iat=now + 60)))


async def test_an_iat_within_the_leeway_is_accepted() -> None:
    # The verifier allows 10 s of clock skew.
    token = sign(claims(iat=int(time.time()) + 5))

    assert (await verifier().verify(token))["sub"] == "alice"


@pytest.mark.parametrize(
    ("subject", "reason"),
    [
        ("al\x00ice", "control characters"),
        ("alice\n", "control characters"),
        ("\x1b[31malice", "control characters"),
        ("alice\u202egnp.exe", "control characters"),
        ("\ud800", "control characters"),
        ("a" * 256, "longer than 255"),
    ],
    ids=["nul", "newline", "escape", "bidi-override", "lone-surrogate", "too-long"],
)
async def test_a_subject_that_is_no_sensible_identifier_is_refused(
    subject: str, reason: str
) -> None:
    # Built by hand: the JSON escapes (\u0000, \ud800) reach the verifier as they would from
    # any issuer.
    header = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims(sub=subject)).encode())
    signing_input = f"{header}.{payload}".encode()
    private = serialization.load_pem_private_key(PRIVATE, None)
    assert isinstance(private, rsa.RSAPrivateKey)
    signature = private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    token = f"{header}.{payload}.{b64(signature)}"

    assert reason in await refused(token)


async def test_a_subject_of_the_longest_length_with_any_letters_is_accepted() -> None:
    subject = "ü" * 200 + "user@example.com|" + "x" * 38

    assert (await verifier().verify(sign(claims(sub=subject))))["sub"] == subject


def ec_key_pair(curve: ec.EllipticCurve) -> tuple[bytes, bytes]:
    private = ec.generate_private_key(curve)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


async def test_a_jwks_key_on_another_curve_than_the_algorithm_is_not_used() -> None:
    # An ES256 token signed with a P-384 key whose JWK names no `alg` (it is optional, and
    # many issuers leave it out): refused for its curve, as a PEM key would be.
    private_pem, public_pem = ec_key_pair(ec.SECP384R1())
    issuer, clock = FakeIssuer(), Clock()
    data = jwk.construct(public_pem.decode(), "ES384").to_dict()
    data.pop("alg")
    assert data["crv"] == "P-384"
    issuer.keys.append({**data, "kid": "p384", "use": "sig"})
    keys = jwks_keys(issuer, clock)
    es256 = verifier(keys, ("ES256",))
    token = sign(claims(), private_pem, algorithm="ES256", headers={"kid": "p384"})

    with pytest.raises(InvalidToken, match="unknown signing key"):
        await es256.verify(token)


async def test_a_jwks_key_on_the_algorithms_curve_is_used() -> None:
    private_pem, public_pem = ec_key_pair(ec.SECP256R1())
    issuer, clock = FakeIssuer(), Clock()
    data = jwk.construct(public_pem.decode(), "ES256").to_dict()
    data.pop("alg")
    issuer.keys.append({**data, "kid": "p256", "use": "sig"})
    es256 = verifier(jwks_keys(issuer, clock), ("ES256",))
    token = sign(claims(), private_pem, algorithm="ES256", headers={"kid": "p256"})

    assert (await es256.verify(token))["sub"] == "alice"


def serving_jwks(handler: Any, **options: Any) -> JwksKeys:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return JwksKeys(
        client,
        "https://issuer.test/.well-known/jwks.json",
        cache_seconds=600,
        min_refresh_seconds=30,
        **options,
    )


def huge_jwks() -> bytes:
    key = jwk.construct(PUBLIC.decode(), "RS256").to_dict()
    keys = [{**key, "kid": f"k{n}"} for n in range(400)]  # about 200 KB
    return json.dumps({"keys": [{**key, "kid": "k1"}, *keys]}).encode()


async def test_a_jwks_over_the_size_cap_is_refused() -> None:
    body = huge_jwks()
    keys = serving_jwks(lambda request: httpx.Response(200, content=body), max_bytes=64 * 1024)

    with pytest.raises(KeysUnavailable):
        await keys.key_for("k1", "RS256")


async def test_a_streamed_jwks_over_the_size_cap_is_cut_off() -> None:
    # No Content-Length: the cap applies to what is read.
    body = huge_jwks()
    read = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal read
        for start in range(0, len(body), 4096):
            read += 4096
            yield body[start : start + 4096]

    keys = serving_jwks(lambda request: httpx.Response(200, content=chunks()), max_bytes=64 * 1024)

    with pytest.raises(KeysUnavailable):
        await keys.key_for("k1", "RS256")
    assert read <= 64 * 1024 + 4096


async def test_a_jwks_that_trickles_in_is_given_up_at_the_deadline() -> None:
    # Each byte arrives well within any read timeout; only an overall deadline ends it.
    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"keys": ['
        while True:
            await asyncio.sleep(0.05)
            yield b" "

    keys = serving_jwks(lambda request: httpx.Response(200, content=trickle()), fetch_timeout=0.5)

    async with asyncio.timeout(5):
        with pytest.raises(KeysUnavailable):
            await keys.key_for("k1", "RS256")

"""Throwaway keys and tokens for local use. Never use these keys in production.

    python -m orders_dev.devtoken keygen --dir .devkeys       # writes private.pem and public.pem
    python -m orders_dev.devtoken mint --key .devkeys/private.pem --sub alice
    python -m orders_dev.devtoken secrets --dir /secrets     # a random database password, once

`mint` takes the audience and issuer from JWT_AUDIENCE and JWT_ISSUER (or --aud / --iss).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt

DEFAULT_TTL_SECONDS = 3600


def generate_key_pair() -> tuple[bytes, bytes]:
    """A fresh RSA-2048 key pair as (private PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def mint(
    private_pem: str | bytes,
    *,
    sub: str,
    audience: str,
    issuer: str,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    algorithm: str = "RS256",
    kid: str | None = None,
) -> str:
    """A signed token for `sub`, valid from now for `ttl_seconds`."""
    now = int(time.time())
    claims = {"sub": sub, "aud": audience, "iss": issuer, "iat": now, "exp": now + ttl_seconds}
    headers = {"kid": kid} if kid else None
    key = private_pem.decode() if isinstance(private_pem, bytes) else private_pem
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def _keygen(directory: Path, force: bool) -> int:
    private_path, public_path = directory / "private.pem", directory / "public.pem"
    if private_path.exists() and not force:
        print(f"{private_path} exists; keeping it (use --force to replace)", file=sys.stderr)
        return 0
    directory.mkdir(parents=True, exist_ok=True)
    private, public = generate_key_pair()
    # Written 0600 from the start: the private key is never readable by others.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(private)
    public_path.write_bytes(public)
    public_path.chmod(0o644)
    print(f"wrote {private_path} and {public_path}", file=sys.stderr)
    return 0


def _secrets(directory: Path, user: str, database: str, host: str) -> int:
    """A random database password as the stack's secret files, once: the database was
    initialised with the first one, so existing files are kept."""
    password_path, url_path = directory / "db_password", directory / "database_url"
    if password_path.exists() and url_path.exists():
        print(f"{directory} holds the database secrets already; keeping them", file=sys.stderr)
        return 0
    directory.mkdir(parents=True, exist_ok=True)
    # URL-safe characters only, so the password goes into the URL as it is.
    password = secrets.token_urlsafe(24)
    password_path.write_text(password)
    url_path.write_text(f"postgresql+asyncpg://{user}:{password}@{host}:5432/{database}")
    # Read by PostgreSQL's and the API's own (unprivileged) users, in a volume only they mount.
    password_path.chmod(0o644)
    url_path.chmod(0o644)
    print(f"wrote {password_path} and {url_path}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orders_dev.devtoken", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser("keygen", help="write a throwaway RSA key pair")
    keygen.add_argument("--dir", type=Path, default=Path(".devkeys"))
    keygen.add_argument("--force", action="store_true", help="replace an existing pair")
    stack = commands.add_parser(
        "secrets", help="write a random database password and URL as secret files, once"
    )
    stack.add_argument("--dir", type=Path, required=True)
    stack.add_argument("--user", default=os.environ.get("POSTGRES_USER", "orders"))
    stack.add_argument("--database", default=os.environ.get("POSTGRES_DB", "orders"))
    stack.add_argument("--host", default="db")
    token = commands.add_parser("mint", help="print a signed token for a user")
    token.add_argument("--key", type=Path, default=Path(".devkeys/private.pem"))
    token.add_argument("--sub", required=True, help="the user id (the token's subject)")
    token.add_argument("--aud", default=os.environ.get("JWT_AUDIENCE"))
    token.add_argument("--iss", default=os.environ.get("JWT_ISSUER"))
    token.add_argument("--ttl", type=int, default=DEFAULT_TTL_SECONDS, help="seconds")
    args = parser.parse_args(argv)

    if args.command == "keygen":
        return _keygen(args.dir, args.force)
    if args.command == "secrets":
        return _secrets(args.dir, args.user, args.database, args.host)
    if not args.aud or not args.iss:
        parser.error("give --aud and --iss, or set JWT_AUDIENCE and JWT_ISSUER")
    try:
        private = args.key.read_bytes()
    except OSError as error:
        parser.error(f"cannot read {args.key}: {error.strerror} (run `keygen` first)")
    print(mint(private, sub=args.sub, audience=args.aud, issuer=args.iss, ttl_seconds=args.ttl))
    return 0


if __name__ == "__main__":
    sys.exit(main())

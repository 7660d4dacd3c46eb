"""The local stack's throwaway secrets: made once, kept afterwards."""

from __future__ import annotations

from pathlib import Path

from orders.settings import DatabaseSettings
from orders_dev.devtoken import main


def test_secrets_are_made_once_and_kept(tmp_path: Path) -> None:
    directory = tmp_path / "secrets"

    assert main(["secrets", "--dir", str(directory), "--user", "app", "--database", "shop"]) == 0
    password = (directory / "db_password").read_text()
    url = (directory / "database_url").read_text()
    assert main(["secrets", "--dir", str(directory)]) == 0

    assert len(password) >= 32
    assert (directory / "db_password").read_text() == password
    assert (directory / "database_url").read_text() == url
    assert url == f"postgresql+asyncpg://app:{password}@db:5432/shop"
    # The URL is one the service accepts as it is.
    assert DatabaseSettings(database_url=url).sqlalchemy_url.password == password
    assert (directory / "database_url").stat().st_mode & 0o777 == 0o644

"""The product's wheel (what the production image installs) holds the service and nothing
else: no development tools, tests or local keys."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_the_orders_package_alone(tmp_path: Path) -> None:
    poetry = shutil.which("poetry")
    assert poetry, "Poetry builds the wheel, as the Containerfile does"
    # The same command the Containerfile's builder runs; about a second.
    subprocess.run(
        [poetry, "build", "--format", "wheel", "--output", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(
            (archive.read(n).decode() for n in names if n.endswith("entry_points.txt")), ""
        )

    packages = {name.split("/")[0] for name in names if not name.startswith("orders-")}
    assert packages == {"orders"}
    assert "orders/app.py" in names
    assert not [name for name in names if "standins" in name or "devtoken" in name]
    assert not [name for name in names if name.endswith((".pem", ".key", ".env"))]
    assert "orders_dev" not in entry_points

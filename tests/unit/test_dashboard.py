"""The Grafana dashboard asks Prometheus only what it can answer: every query parses as
PromQL (checked by promtool) and names only metrics the service exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from orders.observability.metrics import Metrics
from tests.conftest import ROOT
from tests.e2e.test_prometheus import binary

DASHBOARD = ROOT / "deploy" / "observability" / "dashboard.json"


def queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = binary("promtool")
    # Grafana's variables, as Grafana would fill them in.
    rules = [
        {
            "record": f"dashboard:query_{index}",
            "expr": expr.replace("$__rate_interval", "1m").replace("$job", "orders"),
        }
        for index, expr in enumerate(queries())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_metric_it_shows_is_exported() -> None:
    families = list(Metrics().registry.collect())
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    exported = {family.name for family in families} | {
        family.name + suffix for family in families for suffix in suffixes.get(family.type, ())
    }
    shown = {
        name for expr in queries() for name in re.findall(r"\b((?:orders|process)_[a-z_]+)\b", expr)
    }
    assert shown
    assert shown <= exported, shown - exported

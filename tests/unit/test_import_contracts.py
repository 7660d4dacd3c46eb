"""The import-linter contracts in pyproject.toml cover what they claim to: every module of
the package sits in the layers, and the domain's list of third-party packages keeps up with
what the package imports. (`lint-imports` itself checks that the code keeps the contracts.)"""

from __future__ import annotations

import pkgutil
import re
import sys
import tomllib
from typing import Any

import grimp

import orders
from tests.support import ROOT


def contracts() -> list[dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    found: list[dict[str, Any]] = config["tool"]["importlinter"]["contracts"]
    return found


def contract(name: str) -> dict[str, Any]:
    (found,) = [each for each in contracts() if each["name"] == name]
    return found


def test_every_module_of_the_package_is_in_the_layers() -> None:
    (layers,) = [each for each in contracts() if each["type"] == "layers"]
    # "orders.a | (orders.b)": a layer of independent modules, optional ones in parentheses.
    named = {name.strip("() ") for layer in layers["layers"] for name in re.split(r"[|:]", layer)}
    modules = {f"orders.{module.name}" for module in pkgutil.iter_modules(orders.__path__)}

    assert modules - named == set()


def test_the_domain_contract_forbids_every_third_party_package_the_service_imports() -> None:
    graph = grimp.build_graph("orders", include_external_packages=True, cache_dir=None)
    third_party = {
        module
        for module in graph.modules
        if not module.startswith("orders") and module not in sys.stdlib_module_names
    }
    forbidden = set(contract("The domain is the standard library only")["forbidden_modules"])

    assert third_party - forbidden == set()

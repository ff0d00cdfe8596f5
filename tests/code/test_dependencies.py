"""No dead runtime dependencies: each one in ``[project] dependencies`` is imported by the product.

The product's code is ``churn_assets``, ``bento`` and ``data_contracts``. A dependency counts as used
when one of its import names (from ``importlib.metadata.packages_distributions()``) is imported there,
anywhere in a module (lazy imports inside functions included). The only exceptions are tools and
configuration targets the product runs without importing them, listed in ``TOOLS_AND_CONFIG`` with the
reason. Test-only and benchmark-only libraries belong in the ``dev`` extra.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections import defaultdict
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_CODE = ("churn_assets", "bento", "data_contracts")

# Runtime dependencies the product uses without importing them (distribution name -> why).
TOOLS_AND_CONFIG = {
    # `make ui` runs `dagster dev`, which starts the `dagster-webserver` executable; tests/ui starts it too.
    "dagster-webserver": "tool: the Dagster UI server",
    # deploy/dagster/dagster_postgres.yaml (`storage: postgres`) makes Dagster load dagster_postgres by name.
    "dagster-postgres": "config: the PostgreSQL Dagster instance storage",
}


def normalize(name: str) -> str:
    """PEP 503 normalized distribution name (``Scikit_Learn`` -> ``scikit-learn``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_dependencies() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [normalize(Requirement(spec).name) for spec in project["dependencies"]]


def imported_top_level_modules() -> set[str]:
    """Top-level names of every absolute import in the runtime code."""
    modules: set[str] = set()
    for package in RUNTIME_CODE:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    modules.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    return modules


def import_names_by_distribution() -> dict[str, set[str]]:
    by_dist: dict[str, set[str]] = defaultdict(set)
    for module, dists in packages_distributions().items():
        for dist in dists:
            by_dist[normalize(dist)].add(module)
    return by_dist


def test_every_runtime_dependency_is_imported_or_a_listed_tool() -> None:
    imported = imported_top_level_modules()
    import_names = import_names_by_distribution()
    unused = []
    for dist in runtime_dependencies():
        names = import_names.get(dist)
        assert names, f"runtime dependency {dist} is not installed (run `make install`)"
        if dist not in TOOLS_AND_CONFIG and not names & imported:
            unused.append(f"{dist} (import names {sorted(names)})")
    assert not unused, (
        "runtime dependencies never imported by "
        + ", ".join(RUNTIME_CODE)
        + ": "
        + "; ".join(unused)
        + ". Remove them, move test/benchmark-only ones to the dev extra, or list a tool in TOOLS_AND_CONFIG."
    )


def test_the_tool_list_names_only_unimported_runtime_dependencies() -> None:
    dependencies = set(runtime_dependencies())
    imported = imported_top_level_modules()
    import_names = import_names_by_distribution()
    for dist in TOOLS_AND_CONFIG:
        assert dist in dependencies, f"TOOLS_AND_CONFIG lists {dist}, which is not a runtime dependency"
        assert not import_names.get(dist, set()) & imported, (
            f"{dist} is imported by the runtime code: drop it from TOOLS_AND_CONFIG"
        )

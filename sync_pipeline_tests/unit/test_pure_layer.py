"""The pure layer (`mapping/`, `schemas/`) imports no resource, asset, writer or Dagster definition."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "sync_pipeline"
PURE_MODULES = sorted(path for folder in ("mapping", "schemas") for path in (PACKAGE / folder).glob("*.py"))
NOT_PURE = (
    "sync_pipeline.resources",
    "sync_pipeline.assets",
    "sync_pipeline.writers",
    "sync_pipeline.definitions",
    "sync_pipeline.jobs",
    "sync_pipeline.schedules",
    "sync_pipeline.stripe_to_netsuite_sensor",
    "sync_pipeline.salesforce_to_stripe_sensor",
)


def _imported(path: Path) -> list[str]:
    """Every module `path` imports, with `from a import b` as `a.b` (b may be a module)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", PURE_MODULES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_the_pure_layer_imports_no_resource(path):
    assert [name for name in _imported(path) if name.startswith(NOT_PURE)] == []

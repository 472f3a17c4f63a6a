"""The pure core imports nothing that does I/O and nothing from the shells around it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "dtf" / "core"
FORBIDDEN_PREFIXES = (
    "dtf.coordinator",
    "dtf.worker",
    "dtf.journal",
    "dtf.client",
    "dtf.cli",
    "asyncio",
    "socket",
    "subprocess",
    "time",
    "threading",
    "httpx",
    "fastapi",
    "sqlite3",
)


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_does_no_io(path: Path) -> None:
    offending = [
        name
        for name in imported_modules(path)
        if any(name == prefix or name.startswith(prefix + ".") for prefix in FORBIDDEN_PREFIXES)
    ]
    assert not offending, f"{path.name} imports {offending}; dtf.core must stay pure"


def test_core_has_modules_to_check() -> None:
    assert len(list(CORE.glob("*.py"))) > 5

"""The layout's one rule: wiring (trackrelay/) -> engine (relay/) and panel (admin/) -> store; nothing points back up."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE = ("control", "headers", "policy", "intake", "rewrite", "rewrite_html", "classify", "dsn", "records",
        "hit_rules", "status", "notify_payloads", "notice", "optout_pages")


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def top_levels(package: str) -> dict[str, set[str]]:
    return {str(p.relative_to(ROOT)): {n.split(".")[0] for n in imported(p)}
            for p in (ROOT / package).rglob("*.py")}


@pytest.mark.parametrize("package, forbidden", [("relay", {"admin", "trackrelay"}), ("admin", {"trackrelay"})])
def test_nothing_points_back_up(package: str, forbidden: set[str]) -> None:
    wrong = {path: names & forbidden for path, names in top_levels(package).items() if names & forbidden}
    assert not wrong


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_io_layer(module: str) -> None:
    names = imported(ROOT / "relay" / f"{module}.py")
    io_layers = {n for n in names if n.startswith(("relay.store", "asyncio", "sqlite3", "aiohttp", "aiosmtp"))}
    assert not io_layers


def test_the_event_classes_are_spelled_in_one_place() -> None:
    """relay/classify.py's CLASSES is the list; a copy elsewhere drifts the day a class is added."""
    from relay.classify import CLASSES

    copies = []
    for package in ("relay", "admin", "trackrelay"):
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "relay" / "classify.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                    names = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                    if set(CLASSES) <= names:
                        copies.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not copies

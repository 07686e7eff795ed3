"""The money core depends on nothing above it: `wallet`, `ledger` and `store/` import
nothing (directly or through another gpurent module) from `billing`, `rentals` or
`metering`. Checked on the source with `ast`, imports inside functions included, so a
lazy import cannot hide a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "layers" / "gpurent" / "gpurent"
FORBIDDEN = ("gpurent.billing", "gpurent.rentals", "gpurent.metering")
CORE = ["gpurent.wallet", "gpurent.wallet_plan", "gpurent.ledger",
        *sorted(f"gpurent.store.{p.stem}" for p in (PACKAGE / "store").glob("*.py") if p.stem != "__init__")]


def _path(module: str) -> Path | None:
    parts = module.split(".")[1:]
    if not parts:
        return PACKAGE / "__init__.py"
    rel = Path(*parts)
    for candidate in (PACKAGE / rel.with_suffix(".py"), PACKAGE / rel / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imports_of(module: str) -> set[str]:
    """The gpurent modules `module` imports anywhere in its source."""
    path = _path(module)
    assert path is not None, module
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("gpurent"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gpurent"):
            out.add(node.module)
            for a in node.names:  # `from gpurent import billing` names a module
                if _path(f"{node.module}.{a.name}") is not None:
                    out.add(f"{node.module}.{a.name}")
    return out


def closure(module: str) -> dict[str, list[str]]:
    """Every gpurent module reachable from `module`, with one import chain to it."""
    chains: dict[str, list[str]] = {module: [module]}
    todo = [module]
    while todo:
        current = todo.pop()
        for dep in sorted(imports_of(current)):
            if dep not in chains and _path(dep) is not None:
                chains[dep] = [*chains[current], dep]
                todo.append(dep)
    return chains


def test_the_module_list_is_not_empty() -> None:
    assert "gpurent.store.money" in CORE and "gpurent.wallet" in CORE


def test_wallet_ledger_and_store_import_nothing_above_them() -> None:
    bad = []
    for module in CORE:
        for dep, chain in closure(module).items():
            if any(dep == f or dep.startswith(f + ".") for f in FORBIDDEN):
                bad.append(" -> ".join(chain))
    assert not bad, "the money core imports upwards:\n" + "\n".join(bad)


def test_the_checker_sees_a_lazy_import(tmp_path: Path) -> None:
    tree = ast.parse("def f():\n    from gpurent.billing import autotopup\n")
    found = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert found == ["gpurent.billing"]

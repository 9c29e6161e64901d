"""Check the import layout: services depend on shared and the pure signal rules, not each other."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Pure rule modules of services.signals (no I/O): any service may import them.
PURE_SIGNAL_MODULES = frozenset(
    f"services.signals.{name}"
    for name in ("indicators", "rules", "sizing", "universe", "path", "evaluate")
)


def module_name(root: Path, file: Path) -> str:
    """Return the dotted module name of a file below root, so relative imports can resolve."""
    parts = list(file.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(root: Path, file: Path) -> list[tuple[int, str]]:
    """List (line, module) for every import in a file, resolving relative and from-imports."""
    this = module_name(root, file)
    package = this if file.name == "__init__.py" else this.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(file.read_text(), filename=str(file))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # `from pkg import name` imports the submodule pkg.name when it exists.
                sub = f"{base}.{alias.name}"
                sub_path = root.joinpath(*sub.split("."))
                is_module = sub_path.with_suffix(".py").is_file() or sub_path.is_dir()
                found.append((node.lineno, sub if is_module else base))
    return list(dict.fromkeys(found))


def layout_violations(root: Path) -> list[str]:
    """Return one line per import from a service package into another service's modules."""
    services = root / "services"
    packages = sorted(p.name for p in services.iterdir() if (p / "__init__.py").is_file())
    bad: list[str] = []
    for package in packages:
        for file in sorted((services / package).rglob("*.py")):
            where = file.relative_to(root).as_posix()
            for line, target in imported_modules(root, file):
                parts = target.split(".")
                if parts[0] != "services" or len(parts) < 2 or parts[1] == package:
                    continue
                if parts[-1] == "service":
                    bad.append(f"{where}:{line}: imports another service's I/O shell {target}")
                elif target not in PURE_SIGNAL_MODULES:
                    bad.append(f"{where}:{line}: imports {target} of service {parts[1]}")
    return bad


def test_services_import_only_shared_and_pure_signal_rules() -> None:
    bad = layout_violations(ROOT)
    assert not bad, "cross-service imports:\n" + "\n".join(bad)


def write(root: Path, rel: str, text: str = "") -> None:
    """Write a file of a fake source tree, creating its folders."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_checker_flags_cross_service_imports_and_allows_pure_rules(tmp_path: Path) -> None:
    for pkg in ("services", "services/backtest", "services/exchange_sim", "services/signals"):
        write(tmp_path, f"{pkg}/__init__.py")
    for name in ("rules", "path", "service"):
        write(tmp_path, f"services/signals/{name}.py")
    write(tmp_path, "services/exchange_sim/market.py")
    write(
        tmp_path,
        "services/backtest/engine.py",
        "from services.signals import rules\n"
        "from services.signals.path import candle_price_path\n"
        "from shared.candles import load_candles\n"
        "from . import cli\n",
    )
    write(
        tmp_path,
        "services/backtest/cli.py",
        "def run() -> None:\n    from services.exchange_sim.market import Market\n",
    )
    write(tmp_path, "services/exchange_sim/core.py", "import services.backtest.engine\n")
    write(tmp_path, "services/exchange_sim/feed.py", "from ..signals import service\n")
    assert layout_violations(tmp_path) == [
        "services/backtest/cli.py:2: imports services.exchange_sim.market of service exchange_sim",
        "services/exchange_sim/core.py:1: imports services.backtest.engine of service backtest",
        "services/exchange_sim/feed.py:1: imports another service's I/O shell "
        "services.signals.service",
    ]

"""Report of the last ``make mutation`` run: the killed ratio per module and every survivor.

Reads mutmut's results (``mutants/**/*.py.meta``) for the modules listed in ``pyproject.toml``
(``[tool.mutmut] only_mutate``). A mutant is *killed* when a test failed or timed out with
it in place; the ratio is killed / (mutants checked). Every survivor (a mutant the suite
passed with, or one no test reached) is printed with its diff, unless ``survivors.toml``
beside this file explains why it is harmless; then the reason is printed instead.

Exit code 1 when a module is below ``--min`` (90 %) or a survivor has no reason, so the
figures can be trusted at a glance; ``--markdown`` prints the README table.

Usage::

    python -m tests.mutation.report [--min 90] [--markdown] [--quiet] [--module shared/bus.py]
    python -m tests.mutation.report --forget shared/bus.py   # before re-checking a module

mutmut re-checks only the mutants of functions whose code changed; after new tests,
``--forget`` clears a module's results so that the next run checks every mutant again.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SURVIVORS = Path(__file__).with_name("survivors.toml")

# mutmut's exit codes (mutmut/stats.py): anything else is "suspicious".
KILLED: dict[int | None, str] = {1: "killed", 3: "killed", 36: "timeout", 24: "timeout"}
KILLED |= {-24: "timeout", 152: "timeout", 255: "timeout", 37: "type check"}
NOT_RUN: dict[int | None, str] = {None: "not checked", 34: "skipped", 2: "interrupted"}
SURVIVED: dict[int | None, str] = {0: "survived", 5: "no tests", 33: "no tests"}


@dataclass
class Module:
    path: str
    statuses: Counter[str] = field(default_factory=Counter)
    survivors: list[tuple[str, str]] = field(default_factory=list)  # (mutant, status)

    @property
    def checked(self) -> int:
        return sum(n for s, n in self.statuses.items() if s not in NOT_RUN.values())

    @property
    def killed(self) -> int:
        return sum(self.statuses[s] for s in set(KILLED.values()))

    @property
    def ratio(self) -> float:
        return 100.0 * self.killed / self.checked if self.checked else 0.0


def status_of(code: int | None) -> str:
    for table in (KILLED, NOT_RUN, SURVIVED):
        if code in table:
            return table[code]
    return "suspicious"


def configured_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(config["tool"]["mutmut"]["only_mutate"])


def load(modules: list[str]) -> list[Module]:
    out = []
    for path in modules:
        module = Module(path)
        meta = ROOT / "mutants" / f"{path}.meta"
        if meta.exists():
            codes = _exit_codes(meta)
            for name, code in sorted(codes.items(), key=lambda kv: _natural(kv[0])):
                status = status_of(code)
                module.statuses[status] += 1
                if status in SURVIVED.values() or status in ("suspicious", "segfault"):
                    module.survivors.append((name, status))
        out.append(module)
    return out


def _exit_codes(meta: Path) -> dict[str, int | None]:
    """Read one module's results; a running mutmut rewrites the file, so retry a torn read."""
    for attempt in range(20):
        try:
            codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
            return codes
        except json.JSONDecodeError:
            if attempt == 19:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


def _natural(name: str) -> tuple[str, int]:
    stem, _, number = name.rpartition("__mutmut_")
    return stem, int(number) if number.isdigit() else 0


def _dotted(path: str) -> str:
    """Return the mutant name prefix of a module path: services/x/y.py -> services.x.y."""
    return path.removesuffix(".py").replace("/", ".") + "."


def reasons() -> dict[str, str]:
    """Return the explained survivors: mutant name (or fnmatch pattern) to reason."""
    if not SURVIVORS.exists():
        return {}
    return dict(tomllib.loads(SURVIVORS.read_text()).get("survivors", {}))


def reason_for(name: str, known: dict[str, str]) -> str | None:
    if name in known:
        return known[name]
    return next((r for pattern, r in known.items() if fnmatch.fnmatchcase(name, pattern)), None)


def diff(name: str, path: str) -> str:
    try:  # mutmut's own rendering; it reads the mutated copy under mutants/
        from mutmut.mutation.diff_apply import get_diff_for_mutant

        return get_diff_for_mutant(name, path=ROOT / "mutants" / path)
    except Exception as e:  # a report must not die on one diff
        return f"(no diff: {e})"


def table(modules: list[Module], markdown: bool) -> str:
    rows = [("module", "mutants", "killed", "survived", "no tests", "killed %")]
    for m in modules:
        rows.append(
            (
                m.path,
                str(m.checked),
                str(m.killed),
                str(m.statuses["survived"] + m.statuses["suspicious"]),
                str(m.statuses["no tests"]),
                f"{m.ratio:.1f}" if m.checked else "not run",
            )
        )
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def forget(path: str) -> int:
    """Clear the results of one module's mutants (the next run checks them all); return how many."""
    meta = ROOT / "mutants" / f"{path}.meta"
    if not meta.exists():
        return 0
    data = json.loads(meta.read_text())
    data["exit_code_by_key"] = dict.fromkeys(data["exit_code_by_key"])
    meta.write_text(json.dumps(data))
    return len(data["exit_code_by_key"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--min", type=float, default=90.0, help="lowest killed %% per module")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("--quiet", action="store_true", help="no diffs, only names and reasons")
    parser.add_argument(
        "--module", action="append", help="only this module (a path as in only_mutate); repeatable"
    )
    parser.add_argument("--forget", metavar="MODULE", help="clear a module's results and exit")
    args = parser.parse_args(argv)
    if args.forget:
        print(f"{args.forget}: {forget(args.forget)} result(s) cleared; the next run checks them")
        return 0

    modules = load(args.module or configured_modules())
    known = reasons()
    unexplained = 0
    for m in modules:
        for name, status in m.survivors:
            why = reason_for(name, known)
            if why is not None:
                print(f"~ {name} ({status}), harmless: {why}")
                continue
            unexplained += 1
            print(f"! {name} ({status}): no reason given")
            if not args.quiet:
                print("    " + diff(name, m.path).replace("\n", "\n    "))
    print()
    print(table(modules, args.markdown))
    pending = sum(m.statuses["not checked"] for m in modules)
    low = [m.path for m in modules if not m.checked or m.ratio < args.min]
    print()
    if pending:
        print(f"{pending} mutant(s) not checked: the run did not finish (make mutation resumes)")
    if low:
        print(f"below {args.min:g}% killed (or not run): {', '.join(low)}")
    if unexplained:
        print(f"{unexplained} survivor(s) without a reason in {SURVIVORS.relative_to(ROOT)}")
    # A reason is stale when its module was run and no survivor of it matches any more.
    run = [m for m in modules if m.checked]
    stale = [p for p in known
             if any(p.startswith(_dotted(m.path)) for m in run)
             and not any(reason_for(n, {p: ""}) is not None for m in run for n, _ in m.survivors)
             ]  # fmt: skip
    if stale:
        print(f"{len(stale)} reason(s) in survivors.toml match no survivor: {', '.join(stale)}")
    return 1 if low or unexplained or pending else 0


if __name__ == "__main__":
    sys.exit(main())

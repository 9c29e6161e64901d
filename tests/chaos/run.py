"""``python -m tests.chaos.run --minutes N``: one chaos run of the whole bot, summary printed.

Options: ``--minutes`` (chaos length, default 30), ``--seed`` (the schedule's RNG), ``--speed``
(market speed), ``--workers`` (signals workers), ``--json PATH`` (write the summary there too),
``--workdir DIR`` (logs, Redis AOF and the simulator's account; default a new temporary
directory, kept and named in the summary). Exit code 0 when every asserted invariant held,
1 otherwise. ``make chaos`` runs it for 30 minutes (``make chaos MINUTES=5``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from tests.chaos.harness import Chaos, ChaosConfig, format_summary


def main(argv: list[str] | None = None) -> int:
    """Run the chaos harness from the command line; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0, help="chaos length (default 30)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the chaos schedule")
    parser.add_argument("--speed", type=float, default=300.0, help="market speed (default 300)")
    parser.add_argument("--workers", type=int, default=2, help="signals workers (default 2)")
    parser.add_argument("--json", type=Path, help="also write the summary as JSON here")
    parser.add_argument("--workdir", type=Path, help="logs and data (default: a new temp dir)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tradebot-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    config = ChaosConfig(
        chaos_s=args.minutes * 60, seed=args.seed, speed=args.speed, workers=args.workers
    )
    say = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    summary = Chaos(workdir.resolve(), config, say=say).run().as_dict()
    print(format_summary(summary), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"summary written to {args.json}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

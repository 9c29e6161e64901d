"""``python -m services.executor``: the only process that sends orders (one active copy)."""

from __future__ import annotations

from services.executor.service import run
from shared.clikit import service_args
from shared.config import settings_or_exit
from shared.service import service_main


def main() -> None:
    """Load the settings (exit 2 if invalid) and run the executor under its lease."""
    service_args("executor")
    service_main("executor", settings_or_exit(), run, single_active=True)


if __name__ == "__main__":
    main()

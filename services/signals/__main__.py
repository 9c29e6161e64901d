"""``python -m services.signals``: run one signals worker (any number may run side by side)."""

from __future__ import annotations

from services.signals.service import run
from shared.clikit import service_args
from shared.config import settings_or_exit
from shared.service import service_main


def main() -> None:
    """Load the settings (exit 2 on a bad one) and run the worker until SIGTERM."""
    service_args("signals")
    service_main("signals", settings_or_exit(), run, single_active=False)


if __name__ == "__main__":
    main()

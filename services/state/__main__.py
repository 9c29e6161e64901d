"""``python -m services.state``: the single writer of the position book (one active copy)."""

from __future__ import annotations

from services.state.service import run
from shared.clikit import service_args
from shared.config import settings_or_exit
from shared.service import service_main


def main() -> None:
    """Load the settings (exit 2 if invalid) and run state under its lease."""
    service_args("state")
    service_main("state", settings_or_exit(), run, single_active=True)


if __name__ == "__main__":
    main()

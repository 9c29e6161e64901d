"""``python -m services.market_data``: run market data (one copy active, others hot standby)."""

from __future__ import annotations

from services.market_data.service import run
from shared.clikit import service_args
from shared.config import settings_or_exit
from shared.service import service_main


def main() -> None:
    """Load the settings (exit 2 naming a bad one) and run the service to its end."""
    service_args("market_data")
    service_main("market_data", settings_or_exit(), run, single_active=True)


if __name__ == "__main__":
    main()

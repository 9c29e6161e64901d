"""Logging: one line per event to stdout and to a daily file logs/<service>_YYYY-MM-DD.log."""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from pathlib import Path

from pydantic import SecretStr

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class DailyFileHandler(logging.handlers.TimedRotatingFileHandler):
    """Rotate at midnight UTC, naming each day's file ``<service>_YYYY-MM-DD.log``."""

    def __init__(self, log_dir: Path, service: str) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log_dir = log_dir
        self._service = service
        super().__init__(self._path_for(time.time()), when="midnight", utc=True, delay=True)
        self.namer = self._name_rotated

    def _path_for(self, ts: float) -> str:
        day = time.strftime("%Y-%m-%d", time.gmtime(ts))
        return str(self._log_dir / f"{self._service}_{day}.log")

    def _name_rotated(self, default_name: str) -> str:
        # The closed file keeps the name of its own day; the new one gets today's.
        return default_name

    def doRollover(self) -> None:
        if self.stream:
            self.stream.close()
            self.stream = None
        self.baseFilename = self._path_for(time.time())
        self.rolloverAt = self.computeRollover(int(time.time()))


class SecretFilter(logging.Filter):
    """Replace any known secret value in a log record with asterisks, as a last line of defence."""

    def __init__(self, secrets: list[SecretStr]) -> None:
        super().__init__()
        self._values = [s.get_secret_value() for s in secrets if s.get_secret_value()]

    def filter(self, record: logging.LogRecord) -> bool:
        if self._values:
            msg = record.getMessage()
            for v in self._values:
                msg = msg.replace(v, "**********")
            record.msg, record.args = msg, None
        return True


def setup_logging(
    service: str,
    log_dir: Path | None = None,
    level: str = "INFO",
    secrets: list[SecretStr] | None = None,
) -> logging.Logger:
    """Configure the root logger for a service and return the service's logger."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    formatter = logging.Formatter(FORMAT)
    formatter.converter = time.gmtime
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if log_dir is not None:
        handlers.append(DailyFileHandler(log_dir, service))
    secret_filter = SecretFilter(secrets or [])
    for h in handlers:
        h.setFormatter(formatter)
        h.addFilter(secret_filter)
        root.addHandler(h)
    root.setLevel(level)
    return logging.getLogger(service)

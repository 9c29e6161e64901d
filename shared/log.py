"""Logging: one line per event to stdout and to a daily file logs/<service>_YYYY-MM-DD.log."""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_TRACEBACK = logging.Formatter()


class DailyFileHandler(logging.handlers.TimedRotatingFileHandler):
    """Rotate at midnight UTC, naming each day's file ``<service>_YYYY-MM-DD.log``."""

    def __init__(self, log_dir: Path, service: str, clock: Callable[[], float] = time.time) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log_dir = log_dir
        self._service = service
        self._clock = clock
        super().__init__(self._path_for(clock()), when="midnight", utc=True, delay=True)
        self.rolloverAt = self.computeRollover(int(clock()))

    def _path_for(self, ts: float) -> str:
        day = time.strftime("%Y-%m-%d", time.gmtime(ts))
        return str(self._log_dir / f"{self._service}_{day}.log")

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        return self._clock() >= self.rolloverAt

    def doRollover(self) -> None:
        """Close today's file and switch to the new day's; nothing is renamed."""
        if self.stream:
            self.stream.close()
            self.stream = None
        now = self._clock()
        self.baseFilename = self._path_for(now)
        self.rolloverAt = self.computeRollover(int(now))


def error_text(e: BaseException) -> str:
    """Return ``Type: message`` for logs and dead letters; redis-py 8's repr drops the message."""
    msg = str(e)
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


class SecretFilter(logging.Filter):
    """Replace any known secret value in a log record with asterisks, as a last line of defence."""

    def __init__(self, secrets: list[SecretStr]) -> None:
        super().__init__()
        self._values = [s.get_secret_value() for s in secrets if s.get_secret_value()]

    def filter(self, record: logging.LogRecord) -> bool:
        if self._values:
            record.msg, record.args = self._mask(record.getMessage()), None
            if record.exc_info and not record.exc_text:  # the formatter then uses exc_text
                record.exc_text = _TRACEBACK.formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = self._mask(record.exc_text)
            if record.stack_info:
                record.stack_info = self._mask(record.stack_info)
        return True

    def _mask(self, text: str) -> str:
        for v in self._values:
            text = text.replace(v, "**********")
        return text


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

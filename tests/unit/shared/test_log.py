"""Logging: a daily file per service named by the UTC day, and secrets never written."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.log import DailyFileHandler, error_text, setup_logging

DAY1 = 1_764_028_800.0  # 2025-11-25T00:00:00Z


def test_daily_file_switches_at_utc_midnight(tmp_path: Path) -> None:
    now = [DAY1 + 3600]
    handler = DailyFileHandler(tmp_path, "executor", clock=lambda: now[0])
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("test.daily")
    log.propagate = False
    log.addHandler(handler)
    try:
        log.warning("first day")
        now[0] = DAY1 + 86_400 + 5
        log.warning("second day")
    finally:
        log.removeHandler(handler)
        handler.close()
    assert (tmp_path / "executor_2025-11-25.log").read_text() == "first day\n"
    assert (tmp_path / "executor_2025-11-26.log").read_text() == "second day\n"


def test_setup_logging_masks_secrets_in_file_and_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = SecretStr("hunter2-very-secret")
    log = setup_logging("state", tmp_path, "INFO", secrets=[secret])
    try:
        log.info("connecting with key %s", "hunter2-very-secret")
    finally:
        for h in list(logging.getLogger().handlers):
            h.close()
            logging.getLogger().removeHandler(h)
    files = list(tmp_path.glob("state_*.log"))
    assert len(files) == 1
    text = files[0].read_text()
    assert "connecting with key **********" in text
    assert "hunter2" not in text
    out = capsys.readouterr().out
    assert "connecting with key **********" in out
    assert "hunter2" not in out


def test_error_text_keeps_the_message_redis_repr_drops() -> None:
    client = redis.Redis(port=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.ConnectionError) as info:
        client.ping()
    message = str(info.value)
    assert message  # the library's words, whatever its repr shows (redis-py 8's drops them)
    assert error_text(info.value) == f"ConnectionError: {message}"
    assert error_text(ValueError("bad value")) == "ValueError: bad value"
    assert error_text(TimeoutError()) == "TimeoutError"


def test_setup_logging_masks_secrets_in_tracebacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = setup_logging("state", tmp_path, "INFO", secrets=[SecretStr("hunter2-very-secret")])
    try:
        try:
            raise ValueError("bad url redis://:hunter2-very-secret@host:6379/0")
        except ValueError:
            log.exception("cannot connect")
    finally:
        for h in list(logging.getLogger().handlers):
            h.close()
            logging.getLogger().removeHandler(h)
    [file] = tmp_path.glob("state_*.log")
    for text in (file.read_text(), capsys.readouterr().out):
        assert "ValueError: bad url redis://:**********@host:6379/0" in text
        assert "hunter2" not in text

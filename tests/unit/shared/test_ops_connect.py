"""Operator commands name the Redis they could not reach in one line, password masked."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from shared.cli import app
from shared.config import Settings, mask_url
from shared.redisconn import free_port, redis_url


def test_redis_url_prefers_the_setting_then_the_embedded_server() -> None:
    assert redis_url(Settings(embedded_redis_port=6391)) == "redis://127.0.0.1:6391/0"
    assert redis_url(Settings(redis_url="redis://h:1/2")) == "redis://h:1/2"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6390/0", "redis://127.0.0.1:6390/0"),
        ("redis://:s3cret@redis:6379/0", "redis://:**********@redis:6379/0"),
        ("rediss://bot:s3cret@h/1", "rediss://bot:**********@h/1"),
    ],
)
def test_mask_url_hides_the_password(url: str, shown: str) -> None:
    assert mask_url(url) == shown


@pytest.mark.parametrize(
    "args", [["status"], ["halt"], ["resume"], ["flatten", "--yes"], ["dlq", "list"]]
)
def test_unreachable_redis_is_one_line_and_exit_1(args: list[str]) -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    result = CliRunner().invoke(app, args, env={"TB_REDIS_URL": url})
    assert result.exit_code == 1, result.output
    port = url.rsplit(":", 1)[1].split("/")[0]
    assert result.output == (
        f"cannot reach Redis at redis://:**********@127.0.0.1:{port}/0: is `tradebot up` running?\n"
    )


def test_default_url_is_the_embedded_server() -> None:
    port = free_port()
    result = CliRunner().invoke(app, ["status"], env={"TB_EMBEDDED_REDIS_PORT": str(port)})
    assert result.exit_code == 1
    assert f"cannot reach Redis at redis://127.0.0.1:{port}/0" in result.output
    assert "Traceback" not in result.output

"""How an operator command reaches Redis: the URL (or Sentinels) it uses, one-line failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import typer
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.config import Settings, mask_url
from shared.log import error_text
from shared.redisconn import redis_from_sentinels, redis_password, redis_url
from shared.schemas import SchemaError

T = TypeVar("T")

# Short enough that a command answers soon when Redis is down, long enough for a loaded server
# (the services' client retries for seconds; a person at a prompt wants the answer now).
CONNECT_TIMEOUT_S = 3.0
SOCKET_TIMEOUT_S = 10.0


def unreachable_line(url: str, err: BaseException) -> str:
    """Return the one line printed when Redis cannot be used."""
    shown = mask_url(url)
    if isinstance(err, AuthenticationError):
        return f"cannot log in to Redis at {shown}: {error_text(err)}"
    return f"cannot reach Redis at {shown}: is `tradebot up` running?"


def sentinel_line(settings: Settings, err: BaseException) -> str:
    """Return the one line printed when the primary cannot be used through the Sentinels."""
    where = f"the Redis primary {settings.redis_sentinel_master!r} through the Sentinels at "
    where += settings.redis_sentinels
    if isinstance(err, AuthenticationError):
        return f"cannot log in to {where}: {error_text(err)}"
    return f"cannot reach {where}: {error_text(err)}"


def client_for(settings: Settings) -> aioredis.Redis:
    """Return an operator command's client: short timeouts, one retry; through the Sentinels
    when TB_REDIS_SENTINELS is set, else to TB_REDIS_URL (or the embedded server's URL)."""
    quick: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 1),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }
    if settings.redis_sentinels:
        return redis_from_sentinels(
            settings.sentinel_addresses,
            settings.redis_sentinel_master,
            password=redis_password(settings),
            **quick,
        )
    return aioredis.Redis.from_url(redis_url(settings), password=redis_password(settings), **quick)


def refused_line(url: str, err: BaseException) -> str:
    """Return the one line printed when Redis's ACL refuses the user a command or a key."""
    user = urlsplit(url).username or "default"
    return (
        f"Redis at {mask_url(url)} refused user {user!r}: {error_text(err)} "
        "(give it the bot's ACL rights)"
    )


def run_with_redis(settings: Settings, work: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    """Run ``work`` with a client to the bot's Redis; exit 1 with one line if Redis fails us."""

    async def go() -> T:
        client = client_for(settings)
        try:
            return await work(client)
        finally:
            await client.aclose()

    try:
        return asyncio.run(go())
    except (RedisConnectionError, RedisTimeoutError, OSError) as e:
        if settings.redis_sentinels:
            typer.echo(sentinel_line(settings, e), err=True)
        else:
            typer.echo(unreachable_line(redis_url(settings), e), err=True)
        raise typer.Exit(1) from None
    except NoPermissionError as e:
        typer.echo(refused_line(redis_url(settings), e), err=True)
        raise typer.Exit(1) from None
    except SchemaError as e:
        typer.echo(f"unreadable record in Redis: {e}", err=True)
        raise typer.Exit(1) from None

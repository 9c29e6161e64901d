"""The operator commands on the ``tradebot`` CLI: status, halt, resume, flatten, dlq list/replay."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import redis.asyncio as aioredis
import typer
from redis.exceptions import ResponseError
from rich.console import Console
from rich.markup import escape

from shared import book, keys
from shared.book import BookPosition
from shared.clikit import new_app
from shared.config import ConfigError, Settings, exit_bad_config, load_settings
from shared.ops import control, dlq, status, status_view
from shared.ops.connect import run_with_redis

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML settings file (also TB_CONFIG); env TB_* wins over it."),
]


def _settings(config_file: Path | None) -> Settings:
    try:
        return load_settings(config_file)
    except ConfigError as e:
        exit_bad_config(e)


def _describe(p: BookPosition) -> str:
    return f"{p.symbol} {p.side} {p.quantity:g} @ {p.entry_price:g} (stop {p.stop_price:g})"


def status_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    config_file: ConfigOption = None,
) -> None:
    """Show services, mode, halt, universe, positions, trades, account, streams and the DLQ."""
    settings = _settings(config_file)

    async def work(client: aioredis.Redis) -> dict[str, Any]:
        return await status.collect(client, settings)

    report = run_with_redis(settings, work)
    if as_json:
        typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        status_view.render(report, Console())


def halt_cmd(
    reason: Annotated[str, typer.Option("--reason", help="Why (shown by status).")] = "manual",
    config_file: ConfigOption = None,
) -> None:
    """Stop new entries; open positions keep their stops and exits are still managed."""
    settings = _settings(config_file)
    run_with_redis(settings, lambda client: control.halt(client, reason))
    typer.echo(
        f"Trading halted (reason: {reason}): the executor opens no new entries; open positions"
        " keep their stops and exits. `tradebot resume` allows entries again."
    )


def resume_cmd(config_file: ConfigOption = None) -> None:
    """Allow new entries again after halt or flatten."""
    settings = _settings(config_file)

    async def work(client: aioredis.Redis) -> dict[str, Any] | None:
        previous = await status.read_halt(client)
        await control.resume(client)
        return previous

    previous = run_with_redis(settings, work)
    if previous is None:
        typer.echo("Trading was not halted; nothing changed.")
    else:
        typer.echo(
            f"Trading resumed (was halted, reason: {previous.get('reason')}):"
            " the executor may open new entries again."
        )


def flatten_cmd(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, help="Seconds to wait for the book to empty.")
    ] = 120.0,
    config_file: ConfigOption = None,
) -> None:
    """Halt new entries and close every open position at market (the executor does it)."""
    settings = _settings(config_file)
    positions = run_with_redis(settings, book.read_positions)
    if positions:
        typer.echo(f"Open positions ({len(positions)}):")
        for p in positions.values():
            typer.echo(f"  {_describe(p)}")
        if not yes:
            typer.confirm(
                "Close them all at market and halt new entries?", default=False, abort=True
            )
    else:
        typer.echo("No open positions.")
    run_with_redis(settings, lambda client: control.halt(client, control.FLATTEN_REASON))
    typer.echo(f"Trading halted (reason: {control.FLATTEN_REASON}): no new entries.")
    console = Console(stderr=False)

    def progress(open_now: dict[str, BookPosition]) -> None:
        names = ", ".join(p.symbol for p in open_now.values())
        console.print(
            f"  {len(open_now)} open{': ' + escape(names) if names else ''}", highlight=False
        )

    async def work(client: aioredis.Redis) -> tuple[int, dict[str, BookPosition]]:
        with console.status(f"closing positions (waiting up to {timeout:g}s)"):
            return await control.close_all(client, timeout, progress)

    if positions:
        typer.echo(
            f"Asking the executor to close them at market (manual exit signals on"
            f" {keys.STREAM_SIGNALS}); waiting up to {timeout:g}s..."
        )
    requested, remaining = run_with_redis(settings, work)
    resume_hint = "Trading stays halted until `tradebot resume`."
    if not remaining:
        done = f"All {requested} position(s) closed." if requested else "Nothing to close."
        typer.echo(f"{done} {resume_hint}")
        return
    typer.echo(f"{len(remaining)} position(s) still open after {timeout:g}s:", err=True)
    for p in remaining.values():
        typer.echo(f"  {_describe(p)}", err=True)
    typer.echo(
        "Is the executor running (`tradebot status`)? Its exit signals stay queued; run"
        f" `tradebot flatten` again to keep watching. {resume_hint}",
        err=True,
    )
    raise typer.Exit(1)


dlq_app = new_app(
    help="Dead letters: messages that failed TB_MAX_DELIVERIES times.", no_args_is_help=True
)


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="How many, newest first.")
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list.")] = False,
    config_file: ConfigOption = None,
) -> None:
    """List the newest dead letters: origin stream, reason, deliveries, error, payload."""
    settings = _settings(config_file)
    letters = run_with_redis(settings, lambda client: dlq.newest(client, limit))
    if as_json:
        rows = [
            {"id": x.id, **(x.entry.model_dump() if x.entry else {"raw": x.raw.decode("replace")})}
            for x in letters
        ]
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if not letters:
        typer.echo(f"No dead letters in {keys.STREAM_DLQ}.")
        return
    typer.echo(f"Dead letters in {keys.STREAM_DLQ}, newest first ({len(letters)} shown):")
    for x in letters:
        e = x.entry
        if e is None:
            typer.echo(f"{x.id}  (not a readable dead letter)")
            typer.echo(f"    raw:     {dlq.shorten(x.raw.decode('replace'), 100)}")
            continue
        typer.echo(f"{x.id}  {e.stream}  {e.reason}  group={e.group}  deliveries={e.deliveries}")
        typer.echo(f"    error:   {dlq.shorten(e.error, 100)}")
        typer.echo(f"    payload: {dlq.shorten(e.payload, 100)}")


@dlq_app.command("replay")
def dlq_replay(
    ids: Annotated[list[str] | None, typer.Argument(help="DLQ entry ids (from dlq list).")] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    config_file: ConfigOption = None,
) -> None:
    """Put dead letters back on their origin stream and remove them from the DLQ."""
    if bool(ids) == replay_all:
        raise typer.BadParameter("give DLQ entry ids or --all (not both)")
    settings = _settings(config_file)

    async def work(client: aioredis.Redis) -> list[tuple[str, dlq.DeadLetter | None, str]]:
        wanted = await dlq.all_ids(client) if replay_all else list(ids or [])
        return [(i, *await dlq.replay_one(client, i)) for i in wanted]

    results = run_with_redis(settings, work)
    failed = 0
    for dlq_id, letter, detail in results:
        if letter is None or letter.entry is None:
            failed += 1
            typer.echo(f"skipped {dlq_id}: {detail}", err=True)
        else:
            e = letter.entry
            typer.echo(f"replayed {dlq_id} -> {e.stream} as {detail} ({e.reason}: {e.error})")
    typer.echo(f"{len(results) - failed} replayed, {failed} skipped.")
    if failed:
        raise typer.Exit(1)


def _shown(reply: Any, indent: int = 0) -> list[str]:
    """Return a Redis reply as lines, the way redis-cli prints one (nested lists numbered)."""
    pad = " " * indent
    if isinstance(reply, bytes):
        return [pad + reply.decode("utf-8", "backslashreplace")]
    if isinstance(reply, list | tuple):
        if not reply:
            return [pad + "(empty list)"]
        lines: list[str] = []
        for i, item in enumerate(reply, 1):
            inner = _shown(item, indent + 3)
            lines.append(f"{pad}{i}) {inner[0].strip()}")
            lines.extend(inner[1:])
        return lines
    if isinstance(reply, dict):
        return _shown([x for pair in reply.items() for x in pair], indent)
    return [pad + ("(nil)" if reply is None else str(reply))]


def redis_cmd(
    command: Annotated[
        list[str], typer.Argument(metavar="COMMAND [ARG...]", help="e.g. XLEN tb:dlq")
    ],
    write: Annotated[
        bool, typer.Option("--write", help="Allow a command that changes data.")
    ] = False,
    config_file: ConfigOption = None,
) -> None:
    """Run one Redis command on the bot's Redis (no redis-cli needed); read-only unless --write."""
    settings = _settings(config_file)

    async def work(client: aioredis.Redis) -> tuple[str | None, Any]:
        # The raw reply: redis-py's parser of COMMAND fails on an unknown command's [None].
        client.response_callbacks.pop("COMMAND", None)
        run = client.execute_command  # untyped in redis-py
        info = await run("COMMAND", "INFO", command[0])  # type: ignore[no-untyped-call]
        if not info or info[0] is None:
            return f"unknown Redis command {command[0]!r}", None
        flags = {f.decode() if isinstance(f, bytes) else str(f) for f in info[0][2]}
        if "write" in flags and not write:
            return f"{command[0].upper()} changes data: add --write to run it", None
        return None, await run(*command)  # type: ignore[no-untyped-call]

    try:
        refused, reply = run_with_redis(settings, work)
    except ResponseError as e:
        typer.echo(f"tradebot redis: Redis refused it: {e}", err=True)
        raise typer.Exit(1) from None
    if refused is not None:
        typer.echo(f"tradebot redis: {refused}", err=True)
        raise typer.Exit(2)
    typer.echo("\n".join(_shown(reply)))


def register(app: typer.Typer) -> None:
    """Add the operator commands to the tradebot CLI."""
    app.command("status", short_help="Services, positions, trades, equity, streams, DLQ.")(
        status_cmd
    )
    app.command("halt", short_help="Stop new entries (exits are still managed).")(halt_cmd)
    app.command("resume")(resume_cmd)
    app.command("flatten", short_help="Close every open position at market, and halt.")(flatten_cmd)
    app.add_typer(dlq_app, name="dlq")
    app.command("redis", short_help="Run one Redis command on the bot's Redis.")(redis_cmd)

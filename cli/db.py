"""`registry db start|status|stop`: the embedded SecantusDB server."""

from __future__ import annotations

import click

from cli.main import Context, pass_context
from registry.config import redact
from registry.server import EmbeddedServer


@click.group("db")
def db() -> None:
    """Start, inspect and stop the embedded database server."""


@db.command("start")
@pass_context
def start(ctx: Context) -> None:
    """Run the embedded server in the background (or report the one already running)."""
    if ctx.settings.db_uri:
        click.echo(f"using the external database {redact(ctx.settings.db_uri)}; nothing to start")
        return
    state = EmbeddedServer(ctx.settings.home).ensure_running()
    click.echo(f"embedded database running: {state.uri} (pid {state.pid}, data in {state.storage})")


@db.command("status")
@pass_context
def status(ctx: Context) -> None:
    """Where the database is and whether it answers; exit code 1 when the embedded server is not running."""
    if ctx.settings.db_uri:
        reg = ctx.registry
        click.echo(f"external database {redact(reg.uri)}, database '{reg.database}': reachable")
        return
    state = EmbeddedServer(ctx.settings.home).status()
    if state is None:
        click.echo(f"embedded database not running (home {ctx.settings.home})")
        raise SystemExit(1)
    click.echo(f"embedded database running: {state.uri} (pid {state.pid}, data in {state.storage})")


@db.command("stop")
@pass_context
def stop(ctx: Context) -> None:
    """Stop the embedded server; its data stays on disk."""
    stopped = EmbeddedServer(ctx.settings.home).stop()
    click.echo("embedded database stopped" if stopped else "embedded database was not running")


"""`registry db start|status|secure|stop`: the embedded SecantusDB server."""

from __future__ import annotations

import click

from cli.main import Context, pass_context
from registry.db.config import redact
from registry.db.server import USERS, EmbeddedServer, ServerState


@click.group("db")
def db() -> None:
    """Start, inspect, secure and stop the embedded database server."""


def _describe(server: EmbeddedServer, state: ServerState) -> str:
    """Where the server is and who may use it (never the passwords)."""
    line = f"embedded database running: {state.uri} (pid {state.pid}, data in {state.storage})"
    if state.auth:
        line += (f"\nauthentication required: users {USERS['admin'][0]} and {USERS['reader'][0]} (read-only); "
                 f"their passwords are in {server.credentials_file} (mode 0600)")
    else:
        line += "\nopen: no authentication, every local user can read and change it (`registry db secure`)"
    return line


@db.command("start")
@pass_context
def start(ctx: Context) -> None:
    """Run the embedded server in the background (or report the one already running).

    The first start of a home creates an admin and a read-only user and stores their passwords in
    $REGISTRY_HOME/credentials.json (mode 0600); from then on the server requires them. A home made by an older
    registry, without them, is refused until `registry db secure`.
    """
    if ctx.settings.db_uri:
        click.echo(f"using the external database {redact(ctx.settings.db_uri)}; nothing to start")
        return
    server = EmbeddedServer(ctx.settings.home)
    click.echo(_describe(server, server.ensure_running()))


@db.command("secure")
@pass_context
def secure(ctx: Context) -> None:
    """Make an open home private: owner-only files, an admin and a read-only user, authentication required.

    The data stays; a running open server is restarted. Does nothing to a home that is private already.
    """
    if ctx.settings.db_uri:
        click.echo(f"using the external database {redact(ctx.settings.db_uri)}; its security is its own")
        return
    server = EmbeddedServer(ctx.settings.home)
    click.echo(_describe(server, server.secure()))


@db.command("status")
@pass_context
def status(ctx: Context) -> None:
    """Where the database is and whether it answers; exit code 1 when the embedded server is not running."""
    if ctx.settings.db_uri:
        reg = ctx.registry
        click.echo(f"external database {redact(reg.uri)}, database '{reg.database}': reachable")
        return
    server = EmbeddedServer(ctx.settings.home)
    state = server.status()
    if state is None:
        click.echo(f"embedded database not running (home {ctx.settings.home})")
        raise SystemExit(1)
    click.echo(_describe(server, state))


@db.command("stop")
@pass_context
def stop(ctx: Context) -> None:
    """Stop the embedded server; its data stays on disk."""
    stopped = EmbeddedServer(ctx.settings.home).stop()
    click.echo("embedded database stopped" if stopped else "embedded database was not running")

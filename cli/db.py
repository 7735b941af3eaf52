"""`registry db start|status|stop`: the embedded SecantusDB server."""

from __future__ import annotations

import click

from cli.main import Context, pass_context
from registry.db.config import redact
from registry.db.server import USERS, EmbeddedServer, ServerState


@click.group("db")
def db() -> None:
    """Start, inspect and stop the embedded database server."""


def _describe(server: EmbeddedServer, state: ServerState) -> str:
    """Where the server is; with auth, where its credentials are (never the passwords)."""
    line = f"embedded database running: {state.uri} (pid {state.pid}, data in {state.storage})"
    if state.auth:
        line += (f"\nauthentication required: users {USERS['admin'][0]} and {USERS['reader'][0]} (read-only); "
                 f"their passwords are in {server.credentials_file} (mode 0600)")
    return line


@db.command("start")
@click.option("--auth", is_flag=True, help="Require SCRAM authentication; creates an admin and a read-only user "
              "the first time and stores their passwords in $REGISTRY_HOME/credentials.json (mode 0600).")
@pass_context
def start(ctx: Context, auth: bool) -> None:
    """Run the embedded server in the background (or report the one already running).

    A home once started with --auth always starts with it; a running server without it is restarted with it.
    """
    if ctx.settings.db_uri:
        click.echo(f"using the external database {redact(ctx.settings.db_uri)}; nothing to start")
        return
    server = EmbeddedServer(ctx.settings.home)
    click.echo(_describe(server, server.ensure_running(auth=auth)))


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


"""`registry serve`: the registry as an OPTIMADE API (read-only), for pymatgen, ASE, the optimade client and any
other OPTIMADE tool."""

from __future__ import annotations

import click

from cli.main import Context, pass_context


def _stale(ctx: Context) -> int:
    """Structures whose OPTIMADE entry is missing or out of date (e.g. a set changed since the last build)."""
    from builders.chain import make_builder

    builder = make_builder(ctx.registry, "optimade")
    builder.connect()
    try:
        return len(builder.stale_groups())
    finally:
        for store in builder.sources + builder.targets:
            store.close()


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; 0.0.0.0 exposes the registry to the network.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--base-url", help="The public URL the API is reached at, when behind a proxy (default: as requested).")
@pass_context
def serve_command(ctx: Context, host: str, port: int, base_url: str | None) -> None:
    """Serve the registry over OPTIMADE at http://HOST:PORT/v1 until Ctrl-C.

    Serves the optimade stage's view (registry build optimade): build it again after changing candidate sets.
    """
    from registry.output.optimade_server import SERVED, STRUCTURES, serve  # FastAPI and optimade's server: only here

    reg = ctx.registry
    served = reg.count(SERVED, collection=STRUCTURES)
    stale = _stale(ctx)
    if stale:
        click.echo(f"warning: {stale} structures are missing from the OPTIMADE view or out of date there: run "
                   "`registry build optimade`", err=True)
    click.echo(f"serving {served} structures of {reg.database}.{STRUCTURES} at "
               f"{base_url or f'http://{host}:{port}'}/v1 (filter example: /v1/structures?filter=elements HAS "
               "\"O\"); Ctrl-C stops")
    try:
        serve(reg, host=host, port=port, base_url=base_url)
    except KeyboardInterrupt:  # uvicorn has shut down gracefully, then re-raises the signal
        pass
    click.echo("stopped")

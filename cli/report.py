"""`registry report`: one self-contained HTML page about the registry, or about one candidate set."""

from __future__ import annotations

from pathlib import Path

import click

from cli.main import Context, pass_context
from registry.errors import RegistryError
from registry.science.criteria import PRESETS, WORKING_IONS


@click.command("report")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "set_name", help="Report on this candidate set (its preset and ion).")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), help="Default: tunnel, or the set's.")
@click.option("--ion", type=click.Choice(WORKING_IONS), help="Default: Mg, or the set's.")
@click.option("--top", default=50, show_default=True, help="Ranked candidates to show (without --set).")
@pass_context
def report(ctx: Context, out: Path, set_name: str | None, preset: str | None, ion: str | None, top: int) -> None:
    """Write the funnel, plots and ranked table to OUT (HTML, no network needed to view it)."""
    from registry.output.report import write_report

    if set_name is not None and (preset or ion):
        from registry.output.sets import get_set

        s = get_set(ctx.registry, set_name)
        if (preset or s.preset, ion or s.ion) != (s.preset, s.ion):
            raise RegistryError(f"set {set_name} is ranked under preset {s.preset} for {s.ion}; "
                                "leave out --preset and --ion")
    path = write_report(ctx.registry, out, set_name=set_name, preset=preset or "tunnel", ion=ion or "Mg", top=top)
    click.echo(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB)")

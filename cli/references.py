"""`registry references load|status`: the known compounds stability and novelty are judged against."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from cli.main import Context, pass_context
from registry.errors import RegistryError


@click.group("references")
def references() -> None:
    """Load and inspect reference sets of known compounds (the hull and what counts as known)."""


def echo_load(report) -> None:
    """One line per load: what was written and where."""
    if report.added or report.updated or report.removed:
        click.echo(f"reference set {report.name}: {report.compositions} compositions; added {report.added}, "
                   f"updated {report.updated}, removed {report.removed}, unchanged {report.unchanged}, "
                   f"rejected rows {report.rejected} ({report.seconds:.0f} s) -> references")
    else:
        click.echo(f"reference set {report.name}: {report.compositions} compositions, already loaded (unchanged)")


@references.command("load")
@click.option("--elements", help="Only compositions made of these elements (comma-separated), e.g. Mg,Mn,O.")
@click.option("--file", "table", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your own 'formula,target' table of formation energies (eV/atom; .csv or .csv.gz) instead of "
                   "the shipped MP table; needs --name and --energy-scheme.")
@click.option("--name", help="Name of the reference set from --file.")
@click.option("--energy-scheme", type=click.Choice(["mp2020", "legacy"]),
              help="Correction scheme of --file's energies: 'legacy' ones are moved to MP2020 for O-only oxides.")
@click.option("--mp-api", "mp_api", is_flag=True,
              help="Fetch MP2020 formation energies of --elements' systems from the Materials Project (MP_API_KEY).")
@pass_context
def load(ctx: Context, elements: str | None, table: Path | None, name: str | None, energy_scheme: str | None,
         mp_api: bool) -> None:
    """Load a reference set into the database (default: the shipped MP table). Loading again changes nothing."""
    from registry.db.known import load_reference_set
    from registry.science.references import MP_API_SET, SHIPPED_SET, files_sha256, read_mp_thermo, read_table, shipped_set

    only = sorted({e.strip() for e in elements.split(",") if e.strip()}) if elements else None
    if mp_api:
        if not only:
            raise RegistryError("--mp-api needs --elements: the systems to fetch")
        from cli.ingest import _mp_client

        spec, read = MP_API_SET, read_mp_thermo(_mp_client(), only)
    elif table is not None:
        if not name or not energy_scheme:
            raise RegistryError("--file needs --name (the set's name) and --energy-scheme (mp2020 or legacy)")
        read = read_table(table, None, only, shift=energy_scheme == "legacy")
        spec = replace(SHIPPED_SET, name=name, description=f"formation energies from {table.name}",
                       origin=str(table), licence="as stated by its provider", uncertainty="not measured",
                       energy_scheme="as given (MP2020)" if energy_scheme == "mp2020" else SHIPPED_SET.energy_scheme,
                       files=files_sha256(table))
    else:
        spec, read = shipped_set(), read_table(elements=only)
    if not read.compositions:
        raise RegistryError(f"nothing to load: no composition {'of ' + ','.join(only) if only else ''} was read"
                            f" ({len(read.rejected)} rows rejected)")
    echo_load(load_reference_set(ctx.registry, spec, read, only))


@references.command("status")
@pass_context
def status(ctx: Context) -> None:
    """The loaded reference sets: size, energy scheme, origin."""
    sets = ctx.registry.find({}, collection="reference_sets", sort=[("name", 1)])
    if not sets:
        click.echo("no reference set loaded: E_hull is flagged incomplete and novelty is judged against mined "
                   "structures only (registry references load)")
    for s in sets:
        only = f" (only {','.join(s['elements_filter'])})" if s.get("elements_filter") else ""
        click.echo(f"{s['name']}{only}: {s['n_compositions']} compositions, {s['n_formation_energies']} with a "
                   f"formation energy, {s['n_band_gaps']} band gaps, {len(s['elements'])} elements; "
                   f"loaded {s['last_updated']:%Y-%m-%d %H:%M}")
        click.echo(f"  energies: {s['energy_scheme']}")
        click.echo(f"  origin: {s['origin']}")

"""`registry ingest`: mine known structures from files or the Materials Project API."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.main import Context, pass_context
from registry.errors import RegistryError

if TYPE_CHECKING:
    from registry.io.ingest import IngestReport
    from registry.io.records import Record

# schemas.structure's OriginKind, spelled out: importing it takes seconds, and a missing path should fail at once
ORIGIN_KINDS = ["mined", "generated", "dft"]


def print_report(report: IngestReport, where: str) -> None:
    click.echo(f"read {report.read}: ingested {report.ingested}, updated {report.updated}, "
               f"unchanged {report.unchanged}, rejected {report.rejected}")
    if report.repaired:
        click.echo(f"  repaired {report.repaired:>6}  changed in the database since it was ingested: written again")
    for reason, n in sorted(report.reasons.items(), key=lambda kv: -kv[1]):
        click.echo(f"  rejected {n:>6}  {reason}")
    click.echo(f"documents in {where}.structures; reasons for rejects in {where}.rejects")


def _mp_client():
    key = os.environ.get("MP_API_KEY")
    if not key:
        raise RegistryError("--mp-api needs an API key in MP_API_KEY")
    from mp_api.client import MPRester

    return MPRester(key)


@click.command("ingest")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--source", help="Dataset name stored in origin.source (default: the folder given, a CSV's or JSON's "
              "stem, a lone CIF's folder).")
@click.option("--kind", type=click.Choice(ORIGIN_KINDS), default="mined", show_default=True,
              help="Known structures are 'mined'; structures from a generator are 'generated'.")
@click.option("--mp-api", "mp_api", is_flag=True, help="Query the Materials Project API (needs MP_API_KEY).")
@click.option("--elements", help="With --mp-api: comma-separated elements every material must contain.")
@click.option("--chemsys", help="With --mp-api: comma-separated chemical systems, e.g. Mn-O,Mg-Mn-O.")
@pass_context
def ingest(ctx: Context, paths: tuple[Path, ...], source: str | None, kind: str, mp_api: bool,
           elements: str | None, chemsys: str | None) -> None:
    """Ingest CIF files or folders, CSVs with a `cif` column, or JSON of structures/entries.

    Re-ingesting the same input changes nothing; bad records are kept in `rejects` with the reason.
    """
    if not paths and not mp_api:
        raise click.UsageError("give files or folders to ingest, or --mp-api")
    for path in paths:
        if not path.exists():
            raise RegistryError(f"{path}: no such file or folder")
    from tqdm import tqdm

    from registry.io.ingest import Ingestor
    from registry.io.readers import iter_inputs, read_mp_api, read_path
    from schemas.structure import OriginKind

    reg = ctx.registry
    ingestor = Ingestor(reg)

    def records() -> Iterator[Record]:
        for inp in iter_inputs(paths):
            yield from read_path(inp.path, source=source or inp.dataset, kind=OriginKind(kind), name=inp.name)
        if mp_api:
            split = lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None  # noqa: E731
            yield from read_mp_api(_mp_client(), elements=split(elements), chemsys=split(chemsys))

    report = ingestor.write(tqdm(records(), desc="ingest", unit=" records", disable=None))
    print_report(report, reg.database)


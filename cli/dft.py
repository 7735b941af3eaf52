"""`registry dft`: validate candidates with DFT. Export VASP inputs, ingest the finished calculations, compare
them with the ML values, and report parity metrics."""

from __future__ import annotations

from pathlib import Path

import click

from cli.main import Context, pass_context
from cli.query import parse_filter, print_table
from registry.errors import RegistryError
from registry.io.dft import EXPORT_COLLECTIONS, MANIFEST
from registry.science.criteria import PRESETS, WORKING_IONS

COMPARISON_FIELDS = ["formula_pretty", "dft_validated", "dft.formation_energy_per_atom", "ml.formation_energy_per_atom",
                     "dft.e_above_hull", "ml.e_above_hull", "rmsd", "registry_id"]


@click.group("dft")
def dft() -> None:
    """Validate candidates with DFT: export VASP inputs, ingest results, compare with the ML values."""


@dft.command("export")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--set", "set_name", metavar="NAME", help="The latest version of a curated candidate set "
              "(registry sets).")
@click.option("--query", "query", metavar="FILTER", help="Mongo filter on --collection (default for candidates: "
              "'{\"passed\": true}'; relaxed: successful ones; structures: all).")
@click.option("--collection", type=click.Choice(EXPORT_COLLECTIONS), default="candidates", show_default=True,
              help="What to select from; candidates are exported with their ML-relaxed structure.")
@click.option("--force", is_flag=True, help="Write into a non-empty OUT, merging its manifest.")
@pass_context
def export(ctx: Context, out: Path, set_name: str | None, query: str | None, collection: str, force: bool) -> None:
    """Write MPRelaxSet (relax/) and MPStaticSet (static/) inputs per structure into OUT, with manifest.json.

    No POTCAR is written: the manifest lists the POTCAR symbols and functional for each structure.
    """
    from registry.io.dft import export_inputs, select_for_export

    if set_name and query:
        raise click.UsageError("give --set or --query, not both")
    reg = ctx.registry
    selection = select_for_export(reg, collection, parse_filter(query) if query else None, set_name)
    if not selection.items:
        where = f"set {set_name}" if set_name else collection
        raise RegistryError(f"nothing to export from {where}" + (
            f" ({len(selection.skipped)} without a relaxed structure)" if selection.skipped else ""))
    report = export_inputs(reg, selection, out, force=force)
    click.echo(f"wrote {len(report.written)} structure folder(s) (relax/ and static/) to {out}; "
               f"manifest {out / MANIFEST}")
    for rid, reason in sorted(report.skipped.items()):
        click.echo(f"  skipped {rid}: {reason}")
    click.echo("POTCARs are not written: make them from each folder's POTCAR.spec or the manifest's potcar_symbols")


@dft.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@pass_context
def ingest(ctx: Context, paths: tuple[Path, ...]) -> None:
    """Read finished calculations (vasprun.xml, JSON entries or task documents; folders are searched) and
    link each to its registry structure. Re-ingesting the same files changes nothing."""
    from registry.io.dft import ingest_results

    reg = ctx.registry
    report = ingest_results(reg, paths)
    click.echo(f"read {report.read}: ingested {report.ingested}, updated {report.updated}, "
               f"unchanged {report.unchanged}; failed {report.failed}, unlinked {report.unlinked}")
    for method, n in sorted(report.linked_by.items()):
        click.echo(f"  linked {n:>5} by {method}")
    for reason, n in sorted(report.reasons.items(), key=lambda kv: -kv[1]):
        click.echo(f"  failed {n:>5}  {reason}")
    for path, reason in sorted(report.skipped.items()):
        click.echo(f"  skipped {path}: {reason}")
    click.echo(f"documents in {reg.database}.dft; run `registry dft compare` to compare them with the ML values")


@dft.command("compare")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="tunnel", show_default=True,
              help="Its E_hull threshold decides dft_validated.")
@click.option("--force", is_flag=True, help="Redo every comparison, not only what changed.")
@click.option("--top", default=20, show_default=True, help="Comparisons to show (0: none).")
@pass_context
def compare(ctx: Context, preset: str, force: bool, top: int) -> None:
    """Correct the DFT energies (MP2020), place them on the reference hull, compare with the ML values."""
    from builders.chain import BuildOptions, make_builder
    from builders.run import run_builder

    reg = ctx.registry
    reg.ensure_indexes(["dft", "dft_comparison"])
    report = run_builder(make_builder(reg, "dft", BuildOptions(preset=preset, force=force)), "dft", progress=False)
    click.echo(f"dft        processed {report.processed:>6}  failed {report.failed:>5}  up to date "
               f"{report.skipped:>6}  -> {reg.database}.dft_comparison")
    for reason, n in sorted(report.reasons.items(), key=lambda kv: -kv[1])[:5]:
        click.echo(f"    failed {n:>5}  {reason}")
    if top:
        rows = reg.find({}, collection="dft_comparison", fields=COMPARISON_FIELDS,
                        sort=[("dft_validated", -1), ("dft.e_above_hull", 1)], limit=top)
        print_table(rows, COMPARISON_FIELDS)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@dft.command("parity")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), help="Only this preset's candidates; its E_hull "
              "threshold classifies stability (default: all comparisons, threshold 0 as in Matbench Discovery).")
@click.option("--ion", type=click.Choice(WORKING_IONS), help="Only candidates ranked for this working ion.")
@click.option("--threshold", type=float, help="Stability threshold, eV/atom (stable if E_hull <= threshold).")
@pass_context
def parity(ctx: Context, preset: str | None, ion: str | None, threshold: float | None) -> None:
    """MAE / RMSE / R² of ML against DFT, and the stability classification (TP/FP/TN/FN, precision, recall,
    F1, accuracy), over successful comparisons."""
    from registry.output.parity import QUANTITIES, parity_report

    report = parity_report(ctx.registry, preset=preset, ion=ion, threshold=threshold)
    click.echo(f"{report.n_comparisons} comparison(s), {report.n_validated} DFT-validated")
    print_table([{"quantity": q, "n": r.n, "MAE": _number(r.mae), "RMSE": _number(r.rmse), "R2": _number(r.r2)}
                 for q, r in ((q, report.regression[q]) for q in QUANTITIES)], ["quantity", "n", "MAE", "RMSE", "R2"])
    c = report.classification
    click.echo(f"stability: stable if E_hull <= {c.threshold} eV/atom (ML predicted vs DFT), n = {c.n}")
    print_table([{"TP": c.tp, "FP": c.fp, "TN": c.tn, "FN": c.fn, "precision": _number(c.precision),
                  "recall": _number(c.recall), "F1": _number(c.f1), "accuracy": _number(c.accuracy)}],
                ["TP", "FP", "TN", "FN", "precision", "recall", "F1", "accuracy"])

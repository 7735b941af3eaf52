"""`registry build`: run the build chain, incrementally, and show what each stage did."""

from __future__ import annotations

import textwrap

import click

from builders.chain import STAGES, TARGETS, BuildOptions, build
from builders.run import StageReport
from cli.display import print_table, terminal_width
from cli.main import Context, pass_context
from cli.query import parse_filter
from cli.references import echo_load
from cli.run_metrics import summary_line
from registry.db.run_quality import refresh
from registry.science.criteria import PRESETS, WORKING_IONS

TOP_FIELDS = ["formula_pretty", "origin_kind", "passed", "score", "values.formation_energy_per_atom",
              "values.e_above_hull", "values.band_gap", "values.free_sphere", "registry_id"]


def _print(report: StageReport, database: str) -> None:
    """One line per stage. Every count is of the stage's documents (structures, or candidates of a preset and ion),
    so a re-run with nothing changed reports as up to date what the first run processed; held back: items the
    stage's gate stopped (e.g. over the E_hull limit)."""
    click.echo(f"{report.stage:<10} processed {report.processed} (failed {report.failed}), up to date "
               f"{report.skipped}, held back {report.gated} -> {database}.{TARGETS[report.stage]}")
    indent = " " * 18
    for reason, n in sorted(report.reasons.items(), key=lambda kv: -kv[1])[:5]:
        lines = textwrap.wrap(reason, terminal_width() - len(indent), break_on_hyphens=False, max_lines=4,
                              placeholder=" [...]")
        click.echo(f"    failed {n:>5}  {lines[0]}")
        for more in lines[1:]:
            click.echo(indent + more)


@click.command("build")
@click.argument("stage", type=click.Choice(["all", *STAGES]), default="all")
@click.option("--force", is_flag=True, help="Rebuild everything in scope, not only what changed.")
@click.option("--ion", type=click.Choice(WORKING_IONS), default="Mg", show_default=True, help="Working ion to rank for.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="tunnel", show_default=True)
@click.option("--potential", default=BuildOptions.potential, show_default=True,
              help="Tier one, for the screen, relaxation and insertion: 'chgnet', 'sevenn:7net-0', 'sevenn:7net-l3i5', "
              "'sevenn:<checkpoint file>' or 'matgl:<model folder>'.")
@click.option("--refine-potential", default=BuildOptions.refine_potential, show_default=True,
              help="Tier two: a static energy of each relaxed structure still within the E_hull limit plus "
              "--refine-margin, used for E_form and E_hull; 'none' to use the relaxation's energy only.")
@click.option("--refine-margin", default=BuildOptions.refine_margin, show_default=True,
              help="How far (eV/atom) the second tier may bring a structure below the first tier's E_hull.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--fmax", default=0.1, show_default=True, help="Relaxation force criterion, eV/Å.")
@click.option("--steps", default=500, show_default=True, help="Relaxation step limit.")
@click.option("--relax-batch", default=BuildOptions.relax_batch, show_default=True,
              help="Structures relaxed in lockstep, one batched forward pass per step (larger pays on a GPU).")
@click.option("--workers", default=1, show_default=True, help="Processes for screen, relax, refine, tunnels and insertion.")
@click.option("--bandgap-model", type=click.Path(exists=True, file_okay=False), help="Band-gap model folder.")
@click.option("--scope", help="Mongo filter on validated documents: what to relax and carry on "
              "(default: the preset's composition and novelty criteria; '{}' for everything valid).")
@click.option("--exhaustive", is_flag=True, help="No static screen before relaxing and no E_hull gate before "
              "the channel analysis and insertion: spend compute on everything in scope.")
@click.option("--margin", default=0.5, show_default=True,
              help="Screen allowance (eV/atom): how far relaxation may bring a structure down.")
@click.option("--channel-margin", default=BuildOptions.channel_margin, show_default=True,
              help="Screen allowance (Å): how far relaxation may widen the ion's free sphere (presets that need "
              "the channel to admit the ion).")
@click.option("--insertion-ion", "insertion_ions", type=click.Choice(WORKING_IONS), multiple=True,
              help="Ion to insert (repeat for several; default: --ion). A later run with another ion adds it.")
@click.option("--insertion-sites", default=BuildOptions.insertion_sites, show_default=True,
              help="Symmetry-distinct BVSE sites tried per ion.")
@click.option("--insertion-levels", default=BuildOptions.insertion_levels, show_default=True,
              help="Ion contents relaxed up to the maximum (1: the fully discharged state only).")
@click.option("--insertion-configurations", default=BuildOptions.insertion_configurations, show_default=True,
              help="Orderings relaxed per ion content.")
@click.option("--insertion-steps", default=BuildOptions.insertion_steps, show_default=True,
              help="Step limit of each intercalated relaxation.")
@click.option("--top", default=10, show_default=True, help="Candidates to show after ranking (0: none).")
@pass_context
def build_command(ctx: Context, stage: str, force: bool, ion: str, preset: str, potential: str,
                  refine_potential: str, refine_margin: float, device: str,
                  fmax: float, steps: int, relax_batch: int, workers: int, bandgap_model: str | None, scope: str | None,
                  exhaustive: bool, margin: float, channel_margin: float, insertion_ions: tuple[str, ...],
                  insertion_sites: int, insertion_levels: int, insertion_configurations: int, insertion_steps: int,
                  top: int) -> None:
    """Run STAGE (default: all, in dependency order). Only new or changed documents are processed."""
    reg = ctx.registry
    options = BuildOptions(force=force, potential=potential, refine_potential=refine_potential,
                           refine_margin=refine_margin, device=device, fmax=fmax, steps=steps,
                           relax_batch=relax_batch, workers=workers,
                           bandgap_model=bandgap_model, ion=ion, preset=preset,
                           scope=parse_filter(scope) if scope else None, exhaustive=exhaustive, margin=margin,
                           channel_margin=channel_margin, insertion_ions=insertion_ions, insertion_sites=insertion_sites,
                           insertion_levels=insertion_levels, insertion_configurations=insertion_configurations,
                           insertion_steps=insertion_steps)
    reports = build(reg, stage, options, on_stage=lambda r: _print(r, reg.database), on_references=echo_load)
    if any(r.processed for r in reports):  # the generation runs' SUN figures follow what the build changed
        for run_id, quality, changed in refresh(reg):
            if changed:
                click.echo(summary_line(run_id, quality))
    if stage in ("all", "rank") and top:
        rows = reg.top_candidates(preset, ion, top, fields=TOP_FIELDS)
        n_pass = reg.count({"preset": preset, "ion": ion, "passed": True}, collection="candidates")
        click.echo(f"top candidates ({preset} preset, {ion}): {n_pass} pass every hard criterion")
        print_table(rows, TOP_FIELDS)

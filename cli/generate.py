"""`registry generate`: candidate structures from a generator into the registry, one subcommand per generator.

Every subcommand builds a `Generator` and hands it to `run_and_report`, which writes its records with
`run_generator`, tallies CDVAE's validity metrics while they stream past and prints the summary. `generate llm`
(`generators.llm.LLMGenerator`) is added to this group the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from bson import json_util
from pymatgen.core import Element, Structure
from tqdm import tqdm

from cli.ingest import print_report
from cli.main import Context, pass_context
from cli.query import parse_filter
from cli.run_metrics import quality_table
from generators.base import Generator
from generators.cdvae import FILTERS, CDVAESamples, ElementFilter
from generators.run import run_generator
from generators.substitution import WORKING_IONS, SubstitutionGenerator
from registry.db.run_quality import refresh
from registry.errors import RegistryError
from registry.io.ingest import IngestReport
from registry.io.readers import read_path
from registry.science.frameworks import select_frameworks
from registry.science.metrics import GenerationTally
from schemas.generation import GenerationRunDoc

# Known (mined) oxides with a transition metal; generated structures are never frameworks, so a rerun finds the same.
DEFAULT_FRAMEWORKS = {"origin.kind": "mined",
                      "elements": {"$all": ["O"], "$in": [e.symbol for e in Element if e.is_transition_metal]}}


def _elements(text: str | None) -> list[str]:
    return [e.strip() for e in text.split(",") if e.strip()] if text else []


def run_and_report(ctx: Context, generator: Generator,
                   counts: Callable[[], str]) -> tuple[GenerationRunDoc, IngestReport]:
    """Write the generator's records with a progress bar, then print `counts()` (what the generator did), what
    was written, the records' validity and where the run went."""
    reg = ctx.registry
    tally = GenerationTally()
    doc, report = run_generator(
        reg, generator,
        progress=lambda records: tqdm(tally.observe(records), desc=f"generate {generator.name}", unit=" records",
                                      disable=None),
        metrics=lambda: tally.result().as_dict())
    click.echo(counts())
    print_report(report, reg.database)
    m = doc.metrics
    click.echo(f"validity of {m['n_samples']} records (CDVAE's definitions): composition {m['comp_valid']:.3f}, "
               f"structure {m['struct_valid']:.3f}, overall {m['valid']:.3f}; "
               f"{m['n_unique_formulas']} distinct formulas")
    click.echo(f"run {doc.run_id} ({doc.seconds:.1f} s) in {reg.database}.generation_runs")
    return doc, report


@click.group("generate")
def generate() -> None:
    """Generate candidate structures into the registry; every run is recorded in `generation_runs`.

    Rerunning a generator with the same inputs and parameters rewrites the same documents.
    """


@generate.command("substitute")
@click.option("--query", metavar="FILTER",
              help="Mongo filter on structures selecting the frameworks (default: mined oxides with a transition "
                   "metal; with --prototype or --framework and no --query, only those).")
@click.option("--prototype", "prototypes", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A framework CIF (repeatable); its parent id is the id `registry ingest` gives the file.")
@click.option("--framework", "library", multiple=True, metavar="ID",
              help="A framework of the shipped library by id, or 'tunnel' for every tunnel host of it, 'all' for "
                   "every framework (repeatable); its parent id is 'framework:<id>'.")
@click.option("--threshold", type=float, default=1e-5, show_default=True,
              help="Least data-mined probability of a substitution (pymatgen's product over all species).")
@click.option("--max-per-parent", type=int, default=20, show_default=True,
              help="Most distinct new structures per framework.")
@click.option("--ions", default=",".join(WORKING_IONS), show_default=True,
              help="Working ions that may replace tunnel cations (H, alkali and alkaline-earth ions).")
@pass_context
def substitute(ctx: Context, query: str | None, prototypes: tuple[Path, ...], library: tuple[str, ...],
               threshold: float, max_per_parent: int, ions: str) -> None:
    """New compositions by data-mined ionic substitution (Hautier et al. 2011) on known tunnel frameworks.

    Transition metals become other transition-metal ions and tunnel cations become working ions, keeping only
    charge-balanced, distinct structures; each document records its parent and the substitution. Frameworks come
    from the registry (--query), CIF files (--prototype) and the shipped library (--framework).
    """
    mongo_filter = parse_filter(query) if query else (None if prototypes or library else DEFAULT_FRAMEWORKS)
    frameworks: dict[str, Structure] = {}
    try:
        for fw in select_frameworks(library):
            frameworks[f"framework:{fw.id}"] = fw.structure()
    except KeyError as exc:
        raise click.BadParameter(exc.args[0], param_hint="--framework") from None
    if mongo_filter is not None:
        for doc in ctx.registry.find(mongo_filter, fields=["registry_id", "structure"], sort=[("registry_id", 1)]):
            frameworks[doc["registry_id"]] = Structure.from_dict(doc["structure"])
    for path in prototypes:
        for record in read_path(path):
            if record.structure is None:
                raise RegistryError(f"{path}: {record.reason}")
            frameworks.setdefault(record.origin.registry_id(), record.structure)
    if not frameworks:
        raise RegistryError(f"no frameworks: the filter {json_util.dumps(mongo_filter)} matched no structures and "
                            "no --prototype or --framework was given")
    selection: dict[str, Any] = {"query": None if mongo_filter is None else json_util.dumps(mongo_filter),
                                 "prototypes": [str(p) for p in prototypes], "frameworks": list(library)}
    try:
        generator = SubstitutionGenerator(list(frameworks.items()), threshold=threshold,
                                          max_per_parent=max_per_parent, ions=_elements(ions), selection=selection)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None

    def counts() -> str:
        c = generator.counts
        return (f"frameworks {c.frameworks}: skipped {c.skipped}, without a substitution above the threshold "
                f"{c.barren}; candidates {c.candidates}: kept {c.outputs} (written below: new, or unchanged on a "
                f"re-run), rejected {c.rejected}, "
                f"duplicates {c.duplicates}, beyond --max-per-parent {c.capped}")

    run_and_report(ctx, generator, counts)


@generate.command("cdvae")
@click.argument("samples", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--filter", "preset", type=click.Choice(sorted(FILTERS)), help="Keep only samples of a named kind.")
@click.option("--elements", help="Comma-separated elements every kept sample must contain.")
@click.option("--any-of", "any_of", help="Comma-separated elements a kept sample must contain at least one of.")
@click.option("--exclude", help="Comma-separated elements no kept sample may contain.")
@click.option("--offset", type=int, default=0, show_default=True, help="First sample to import, in file order.")
@click.option("--limit", type=int, help="Import at most this many samples (before filtering).")
@pass_context
def cdvae(ctx: Context, samples: Path, preset: str | None, elements: str | None, any_of: str | None,
          exclude: str | None, offset: int, limit: int | None) -> None:
    """Import a CDVAE sampler file (eval_gen.pt, or an .npz of its arrays) as generated structures.

    A slice (--offset/--limit) or a filter imports part of the same run: importing more later adds to it.
    """
    try:
        base = ElementFilter.named(preset) if preset else ElementFilter()
        wanted = ElementFilter(all_of=base.all_of | set(_elements(elements)),
                               any_of=base.any_of | set(_elements(any_of)),
                               exclude=base.exclude | set(_elements(exclude)))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    try:
        generator = CDVAESamples(samples, elements=wanted if wanted.all_of or wanted.any_of or wanted.exclude
                                 else None, offset=offset, limit=limit)
    except ValueError as exc:
        raise RegistryError(str(exc)) from None

    def counts() -> str:
        c = generator.counts
        kept = f" by the element filter {json.dumps(generator.elements.as_dict())}" if generator.elements else ""
        return f"samples {c.samples}: parsed {c.parsed}, rejected {c.rejected}, filtered {c.filtered}{kept}"

    run_and_report(ctx, generator, counts)


@generate.command("llm")
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder written by `registry llm finetune` (it holds model_card.json).")
@click.option("-n", "n", type=int, default=16, show_default=True, help="Samples to draw.")
@click.option("--prompt", help="A full prompt; default: the generation prompt, conditioned on the options below.")
@click.option("--composition", help="Condition on a composition, e.g. MgMn2O4.")
@click.option("--band-gap", type=float, help="Condition on a band gap (eV), if the model was trained with it.")
@click.option("--e-form", type=float, help="Condition on a formation energy (eV/atom), if trained with it.")
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option("--top-p", type=float, default=0.9, show_default=True)
@click.option("--max-new-tokens", type=int, default=512, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", help="cpu or cuda (default: cuda when available).")
@pass_context
def llm(ctx: Context, model_dir: Path, n: int, prompt: str | None, composition: str | None, band_gap: float | None,
        e_form: float | None, temperature: float, top_p: float, max_new_tokens: int, batch_size: int,
        seed: int, device: str | None) -> None:
    """Sample crystals from a fine-tuned language model; unparsable samples are kept as rejects with the reason."""
    from generators.llm import LLMGenerator

    properties = {k: v for k, v in (("band_gap", band_gap), ("formation_energy_per_atom", e_form)) if v is not None}
    try:
        generator = LLMGenerator(model_dir, n=n, prompt=prompt, composition=composition, properties=properties or None,
                                 temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                 batch_size=batch_size, seed=seed, device=device)
    except (ValueError, OSError) as exc:
        raise RegistryError(f"cannot sample from {model_dir}: {exc}") from None
    run_and_report(ctx, generator, lambda: f"samples {n} from {model_dir.name} (version {generator.version})")


@generate.command("metrics")
@click.argument("run_id", required=False)
@pass_context
def metrics(ctx: Context, run_id: str | None) -> None:
    """Stable, unique, novel (SUN) figures of RUN_ID (default: every run) beside the published MP-20 rows.

    Gathered from what the build decided for the run's structures and stored on its `generation_runs` document:
    run `registry build` first (with `--scope '{}' --exhaustive` to evaluate every sample, not only the preset's).
    """
    runs = refresh(ctx.registry, run_id)
    if not runs:
        click.echo(f"no generation runs in {ctx.registry.database}")
    for i, (rid, quality, _) in enumerate(runs):
        click.echo(("\n" if i else "") + quality_table(f"run {rid}", quality))

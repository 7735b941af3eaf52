"""`registry train`: fit the registry's own models."""

from __future__ import annotations

import csv
import json
import shlex
import sys
import warnings
from pathlib import Path

import click

from cli.main import Context, pass_context
from registry.errors import RegistryError

SHIPPED_GAPS = "registry/data/references/mp_gap.csv.gz"


@click.group("train")
def train() -> None:
    """Train the registry's property models."""


@train.command("bandgap")
@click.option("--gaps", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=SHIPPED_GAPS,
              show_default=True, help="'formula,target' table of PBE band gaps (eV), plain or gzipped.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Model folder (default: <registry home>/models/bandgap).")
@click.option("--split-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A split_formulas.json whose validation and test formulas are reused (default: a seeded 80/10/10 "
                   "split by composition).")
@click.option("--holdout-csv", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True,
              help="MP-20-style CSV whose pretty_formula rows are kept out of every split and scored as an outside "
                   "test (repeat).")
@click.option("--all", "train_on_all", is_flag=True,
              help="A deploy model: every row trained on, a fixed number of epochs; needs --heldout.")
@click.option("--heldout", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="With --all: the evaluated run of the same recipe, whose card's metrics and best epoch are used.")
@click.option("--epochs", type=click.IntRange(min=1), help="With --all: default the --heldout run's best epoch.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace a model already in --out.")
@pass_context
def bandgap(ctx: Context, gaps: Path, out: Path | None, split_file: Path | None, holdout_csv: tuple[Path, ...],
            train_on_all: bool, heldout: Path | None, epochs: int | None, seed: int, threads: int,
            overwrite: bool) -> None:
    """Fit the composition band-gap model on PBE gaps, split by composition, and write it with its card."""
    from pymatgen.core import Composition

    from registry.science.bandgap import CARD_FILE, read_gap_csv, read_holdout_formulas, train_composition_bandgap

    out = out or ctx.settings.home / "models" / "bandgap"
    if (out / CARD_FILE).exists() and not overwrite:
        raise RegistryError(f"{out} already holds a model; pass --overwrite to replace it or choose another --out")
    if train_on_all != bool(heldout) or (train_on_all and split_file):
        raise click.UsageError("--all and --heldout go together, without --split-file")
    formulas, values = read_gap_csv(gaps)
    outside: dict[str, tuple[list[str], list[float]]] = {}
    for path in holdout_csv:  # MP-20-style CSVs with a band_gap column are also scored as outside tests
        with open(path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("band_gap") not in (None, "")]
        for name, keep in (("all rows", lambda r: True),
                           ("oxides", lambda r: "O" in {el.symbol for el in Composition(r["pretty_formula"]).elements})):
            f_list, g_list = outside.setdefault(f"holdout CSVs, {name}", ([], []))
            kept = [r for r in rows if keep(r)]
            f_list += [r["pretty_formula"] for r in kept]
            g_list += [float(r["band_gap"]) for r in kept]
    click.echo(f"{len(formulas)} band gaps from {gaps}; training to {out}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pymatgen: "No Pauling electronegativity for He"
        card = train_composition_bandgap(
            formulas, values, out, seed=seed, holdout_formulas=read_holdout_formulas(holdout_csv), epochs=epochs,
            threads=threads, command="registry train bandgap " + shlex.join(sys.argv[3:]),
            outside_tests=outside or None, split_formulas=json.loads(split_file.read_text()) if split_file else None,
            train_on_all=train_on_all, heldout=heldout)
    test, baseline = card["metrics"]["test"], card["metrics"]["baseline_train_mean"]["mae"]
    click.echo(f"held-out MAE {test['mae']:.3f} eV (predicting the training mean: {baseline:.3f} eV; "
               f"{card['metrics'].get('metrics_source', 'this run')}); {card['training']['seconds']:.0f} s")
    click.echo(f"model {card['version']} written to {out}")

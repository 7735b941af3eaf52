"""`registry train`: fit the registry's own models on mined structures with reference properties."""

from __future__ import annotations

import math
from pathlib import Path

import click

from cli.main import Context, pass_context
from cli.query import parse_filter
from registry.errors import RegistryError

DEFAULT_BANDGAP_QUERY = '{"reference.band_gap": {"$type": "number"}}'


@click.group("train")
def train() -> None:
    """Train the registry's property models on structures in the registry."""


@train.command("bandgap")
@click.option("--query", "query", default=DEFAULT_BANDGAP_QUERY, show_default=True, metavar="FILTER",
              help="Mongo filter on structures; only those with a finite reference.band_gap are used.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Model folder (default: <registry home>/models/bandgap).")
@click.option("--architecture", type=click.Choice(["megnet", "m3gnet"]), default="megnet", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=60, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--patience", type=click.IntRange(min=1), default=15, show_default=True,
              help="Stop after this many epochs without a better validation MAE.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True)
@click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True, help="Held out: used neither for training nor for early stopping.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace a model already in --out.")
@pass_context
def bandgap(ctx: Context, query: str, out: Path | None, architecture: str, epochs: int, batch_size: int, lr: float,
            patience: int, val_fraction: float, test_fraction: float, seed: int, overwrite: bool) -> None:
    """Fit a matgl band-gap model on mined structures with Materials Project PBE gaps and write it with its card."""
    from pymatgen.core import Structure

    from registry.bandgap import CARD_FILE, train_bandgap

    out = out or ctx.settings.home / "models" / "bandgap"
    if (out / CARD_FILE).exists() and not overwrite:
        raise RegistryError(f"{out} already holds a model; pass --overwrite to replace it or choose another --out")
    flt = parse_filter(query)
    reg = ctx.registry
    # sorted, so the random split depends only on which structures match and the seed
    docs = reg.find(flt, fields=["registry_id", "structure", "reference.band_gap"], sort=[("registry_id", 1)])
    gaps = [(d.get("reference") or {}).get("band_gap") for d in docs]
    docs = [d for d, g in zip(docs, gaps, strict=True) if isinstance(g, int | float) and math.isfinite(g)]
    click.echo(f"{len(docs)} structures with a finite reference band gap match {query}")
    if len(docs) < 10:
        raise RegistryError(f"{len(docs)} structures are too few to train and hold out a test split; ingest more")
    try:
        card = train_bandgap([Structure.from_dict(d["structure"]) for d in docs],
                             [d["reference"]["band_gap"] for d in docs], out, architecture=architecture,
                             epochs=epochs, batch_size=batch_size, lr=lr, patience=patience,
                             val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, data_query=flt,
                             data_source=f"registry database {reg.database!r}, collection structures",
                             ids=[d["registry_id"] for d in docs])
    except ValueError as exc:
        raise RegistryError(str(exc)) from None
    counts, m, hp = card.data["counts"], card.metrics, card.hyperparameters
    click.echo(f"split: train {counts['train']}, val {counts['val']} (used {counts['val_used']}), "
               f"test {counts['test']} (scored {counts['test_scored']}); dropped {sum(card.data['dropped'].values())}")
    click.echo(f"epochs run {hp['epochs_run']}, best {hp['best_epoch']}; "
               f"{card.timestamps['training_seconds']:.0f} s")
    if "test_mae" in m:
        click.echo(f"held-out MAE {m['test_mae']:.3f} eV, RMSE {m['test_rmse']:.3f} eV "
                   f"(predicting the training mean: MAE {m['baseline_mae_train_mean']:.3f} eV, "
                   f"the median: {m['baseline_mae_train_median']:.3f} eV)")
    else:
        click.echo("held-out MAE: none of the test structures is covered by the training elements")
    click.echo(f"model {card.version} written to {out}")

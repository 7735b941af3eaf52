"""`registry llm finetune`: teach a local causal language model to write crystals (crystal-text-llm style)."""

from __future__ import annotations

from pathlib import Path

import click
from pymatgen.core import Structure

from cli.main import Context, pass_context
from cli.query import parse_filter
from registry.errors import RegistryError

DEFAULT_QUERY = '{"origin.kind": "mined"}'


@click.group("llm")
def llm() -> None:
    """Fine-tune language models on registry structures (sample them with `registry generate llm`)."""


@llm.command("finetune")
@click.option("--base", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A local causal LM folder (transformers format); nothing is downloaded.")
@click.option("--query", default=DEFAULT_QUERY, show_default=True, help="Mongo filter on structures to train on.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--limit", type=int, default=0, help="At most this many structures (0: all).")
@click.option("--condition", "conditioning", multiple=True, default=("composition",), show_default=True,
              help="What prompts state: composition, formation_energy_per_atom, band_gap, e_above_hull.")
@click.option("--epochs", type=int, default=3, show_default=True)
@click.option("--lr", type=float, default=2e-4, show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--max-length", type=int, default=1024, show_default=True)
@click.option("--full", is_flag=True, help="Train every weight instead of LoRA adapters.")
@click.option("--lora-r", type=int, default=8, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", help="cpu or cuda (default: cuda when available).")
@pass_context
def finetune(ctx: Context, base: Path, query: str, out: Path, limit: int, conditioning: tuple[str, ...], epochs: int,
             lr: float, batch_size: int, max_length: int, full: bool, lora_r: int, seed: int,
             device: str | None) -> None:
    """Fine-tune BASE on the structures a Mongo filter selects; writes the merged model and model_card.json."""
    from generators.llm import finetune as run_finetune

    filter_ = parse_filter(query)
    docs = ctx.registry.find(filter_, fields=["structure", "reference"], sort=[("registry_id", 1)], limit=limit)
    if not docs:
        raise RegistryError(f"no structures match {query}")
    data = [(Structure.from_dict(d["structure"]), d.get("reference") or {}) for d in docs]
    click.echo(f"fine-tuning {base} on {len(data)} structures ({ctx.registry.database}.structures, {query})")
    try:
        card = run_finetune(base, data, out, epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length,
                            lora=not full, lora_r=lora_r, seed=seed, conditioning=conditioning,
                            data_query={"collection": "structures", "filter": filter_, "limit": limit},
                            device=device)
    except (ValueError, OSError) as exc:
        raise RegistryError(f"fine-tuning failed: {exc}") from None
    click.echo(f"used {card.n_used} of {card.n_structures} structures ({card.n_examples} examples), "
               f"{card.steps} steps, final train loss {card.train_loss_final:.3f}")
    click.echo(f"model and model_card.json in {out}")

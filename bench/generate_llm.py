"""Fine-tune a causal LM on MP-20 rows as crystal text, sample from it and report speed and parse rate as JSON.

With no --base, a tiny Llama is built locally (tests/generators/tiny_lm.py), which measures the pipeline's
overheads rather than a model's quality. Example:

    PYTHONPATH=. python bench/generate_llm.py --train ../shared/data/mp20_sample/train.csv --epochs 30 --full
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import click
import pandas as pd
import torch
from pymatgen.core import Structure

from generators.llm import LLMGenerator, finetune

PROPERTIES = ["formation_energy_per_atom", "band_gap", "e_above_hull", "spacegroup.number"]


def _training_set(csv: Path, rows: int, max_sites: int) -> list[tuple[Structure, dict]]:
    frame = pd.read_csv(csv)
    pairs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen's notes on CIF coordinates snapped to ideal values
        for row in frame.to_dict("records"):
            structure = Structure.from_str(row["cif"], fmt="cif")
            if len(structure) <= max_sites:
                pairs.append((structure, {p: row[p] for p in PROPERTIES if p in row}))
            if len(pairs) == rows:
                break
    return pairs


@click.command()
@click.option("--train", "csv", type=click.Path(exists=True, path_type=Path), required=True,
              help="CSV with a cif column and MP-20 property columns")
@click.option("--base", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Local base model folder; default: a tiny Llama built here")
@click.option("--rows", default=64, show_default=True, help="Training structures")
@click.option("--max-sites", default=20, show_default=True)
@click.option("--epochs", default=30, show_default=True)
@click.option("--lr", default=3e-3, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--full", is_flag=True, help="Full fine-tune instead of LoRA (a random tiny model needs it)")
@click.option("--samples", default=32, show_default=True)
@click.option("--max-new-tokens", default=300, show_default=True)
@click.option("--threads", default=1, show_default=True, help="torch CPU threads")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the fine-tuned model; default: a temporary folder")
def main(csv: Path, base: Path | None, rows: int, max_sites: int, epochs: int, lr: float, batch_size: int,
         full: bool, samples: int, max_new_tokens: int, threads: int, out: Path | None) -> None:
    torch.set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    if base is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "generators"))
        from tiny_lm import build_tiny_base_model

        base = build_tiny_base_model(work / "base")
    tic = time.perf_counter()
    card = finetune(base, _training_set(csv, rows, max_sites), out or work / "model", epochs=epochs, lr=lr,
                    batch_size=batch_size, lora=not full, conditioning=("composition", "band_gap"),
                    data_query={"csv": str(csv), "rows": rows, "max_sites": max_sites})
    train_s = time.perf_counter() - tic
    generator = LLMGenerator(out or work / "model", n=samples, max_new_tokens=max_new_tokens, batch_size=16)
    tic = time.perf_counter()
    records = list(generator.generate(generator.run_id()))
    sample_s = time.perf_counter() - tic
    parsed = sum(record.structure is not None for record in records)
    reasons = Counter(record.reason.split(":")[0] for record in records if record.reason)
    print(json.dumps({
        "base": str(base), "steps": card.steps, "step_time_s": round(card.step_time_s, 4), "train_s": round(train_s, 1),
        "loss_first_last_epoch": [round(card.loss_per_epoch[0], 3), round(card.train_loss_final, 3)],
        "samples": len(records),
        "samples_per_s": round(len(records) / sample_s, 2), "parse_rate": round(parsed / len(records), 3),
        "reject_reasons": dict(reasons.most_common(8)),
    }, indent=2))


if __name__ == "__main__":
    main()

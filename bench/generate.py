"""Each generator on fixed inputs, run into a fresh embedded database: samples per second, parse and validity rates.

    PYTHONPATH=. python bench/generate.py [--cdvae-limit N] [--llm-samples 32] [--llm-base DIR]

- cdvae: the paper's 10,000 shipped CDVAE samples (registry/data/sample/cdvae/eval_gen_arrays.npz), as
  `registry generate cdvae` imports them; beside the authors' own figures (eval_metrics.json).
- substitution: the 4 tunnel reference CIFs as prototypes, as `registry generate substitute --prototype ...`;
  every accepted structure is charge-balanced, "filtered" are duplicates of a framework or an earlier output.
- llm: a tiny random 2-layer Llama (tests/generators/tiny_lm.py), fully fine-tuned (200 steps, ~15 s) on 16 small
  MP-20 rows, then sampled. It measures the pipeline's overheads (prompting, sampling loop, parsing, writing),
  not a model's quality. `--llm-base DIR` fine-tunes a local checkpoint folder with LoRA instead.

Validity is CDVAE's (Xie et al. 2022) as `registry generate` records it in `generation_runs`: over every sample
produced, rejects counted invalid. Seconds are a run's own (`generation_runs.seconds`: generating, validity and
writing), not the LLM's fine-tuning, which is reported below the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch
import transformers
from rich.console import Console
from rich.table import Table

from generators.base import Generator
from generators.cdvae import CDVAESamples
from generators.llm import LLMGenerator, finetune
from generators.run import run_generator
from generators.substitution import SubstitutionGenerator
from registry.db.client import Registry
from registry.db.server import EmbeddedServer
from registry.io.readers import read_csv, read_path
from registry.science.metrics import GenerationTally
from schemas.generation import GenerationRunDoc

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "registry" / "data" / "sample"


def run(reg: Registry, generator: Generator) -> GenerationRunDoc:
    """`run_generator` with the CDVAE metrics tallied on the way, as `registry generate` does."""
    tally = GenerationTally()
    doc, _ = run_generator(reg, generator, progress=tally.observe, metrics=lambda: tally.result().as_dict())
    return doc


def tiny_llm(work: Path, args: argparse.Namespace) -> tuple[LLMGenerator, str]:
    base = args.llm_base
    if base is None:
        sys.path.insert(0, str(ROOT / "tests" / "generators"))
        from tiny_lm import build_tiny_base_model

        base = build_tiny_base_model(work / "base")
    train = SAMPLE / "mp20" / "train.csv"
    pairs = list(islice(((r.structure, r.reference) for r in read_csv(train)
                         if r.structure is not None and len(r.structure) <= args.llm_max_sites), args.llm_rows))
    t = time.perf_counter()
    card = finetune(base, pairs, work / "model", epochs=args.llm_epochs, lr=3e-3 if args.llm_base is None else 2e-4,
                    batch_size=8, lora=args.llm_base is not None, conditioning=("composition", "band_gap"),
                    data_query={"csv": "mp20/train.csv", "rows": args.llm_rows}, progress=False)
    note = (f"llm fine-tune: {card.n_used} MP-20 structures (<= {args.llm_max_sites} sites), {card.steps} steps in "
            f"{time.perf_counter() - t:.1f} s, loss {card.loss_per_epoch[0]:.2f} -> {card.train_loss_final:.2f}")
    generator = LLMGenerator(work / "model", n=args.llm_samples, max_new_tokens=args.llm_max_new_tokens,
                             batch_size=16, device="cpu")
    return generator, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cdvae-limit", type=int, help="Import only the first N CDVAE samples (default: all)")
    parser.add_argument("--llm-base", type=Path, help="Local base model folder (default: the tiny Llama)")
    parser.add_argument("--llm-rows", type=int, default=16, help="MP-20 structures to fine-tune on")
    parser.add_argument("--llm-max-sites", type=int, default=12)
    parser.add_argument("--llm-epochs", type=int, default=100, help="200 steps: enough for a few samples to parse")
    parser.add_argument("--llm-samples", type=int, default=32)
    parser.add_argument("--llm-max-new-tokens", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.disable_progress_bar()

    prototypes = sorted((SAMPLE / "tunnel_references").glob("*.cif"))
    frameworks = [(r.origin.registry_id(), r.structure) for p in prototypes for r in read_path(p) if r.structure]
    rows: list[tuple[str, GenerationRunDoc]] = []
    notes = []
    with tempfile.TemporaryDirectory() as home:
        server = EmbeddedServer(Path(home))
        try:
            reg = Registry(server.ensure_running(auth=False).uri + "bench")
            cdvae = CDVAESamples(SAMPLE / "cdvae" / "eval_gen_arrays.npz", limit=args.cdvae_limit)
            rows.append((f"{cdvae.path.name}" + (f" (first {args.cdvae_limit})" if args.cdvae_limit else ""),
                         run(reg, cdvae)))
            substitution = SubstitutionGenerator(frameworks, selection={"query": None,
                                                                        "prototypes": [p.name for p in prototypes]})
            rows.append((f"{len(frameworks)} tunnel reference CIFs", run(reg, substitution)))
            c = substitution.counts
            notes.append(f"substitution: {c.candidates} charge-balanced candidates above the threshold, {c.outputs} "
                         f"accepted, {c.rejected} unphysical, {c.duplicates} duplicates, {c.capped} beyond the cap")
            llm, note = tiny_llm(Path(home), args)
            notes.append(note)
            rows.append((f"{args.llm_samples} samples, {'tiny Llama' if args.llm_base is None else args.llm_base.name}",
                         run(reg, llm)))
            reasons = sorted(rows[-1][1].reject_reasons.items(), key=lambda kv: -kv[1])[:3]
            notes.append("llm rejects: " + ("; ".join(f"{n} {reason}" for reason, n in reasons) or "none"))
        finally:
            server.stop()

    table = Table("generator", "input", "produced", "parsed", "rejected", "filtered", "parsed %", "comp valid %",
                  "struct valid %", "valid %", "seconds", "samples/s",
                  title="generators into a fresh embedded SecantusDB (validity: CDVAE's, over every sample produced)")
    for label, d in rows:
        m = d.metrics
        table.add_row(d.generator, label, str(d.produced), str(d.parsed), str(d.rejected), str(d.filtered),
                      f"{100 * d.parsed / max(d.produced, 1):.2f}", f"{100 * m['comp_valid']:.2f}",
                      f"{100 * m['struct_valid']:.2f}", f"{100 * m['valid']:.2f}", f"{d.seconds:.1f}",
                      f"{d.produced / d.seconds:.1f}")
    Console(width=160).print(table)  # tables take only the width they need
    paper = json.loads((SAMPLE / "cdvae" / "eval_metrics.json").read_text())
    print(f"cdvae, the authors' eval_metrics.json (all 10,000): comp valid {100 * paper['comp_valid']:.2f} %, "
          f"struct valid {100 * paper['struct_valid']:.2f} %, valid {100 * paper['valid']:.2f} %")
    for note in notes:
        print(note)
    print("llm: a tiny random model measures the pipeline's overheads (sampling loop, parsing, writing), "
          "not a model's quality; its parse and validity rates say nothing about a real LLM")


if __name__ == "__main__":
    main()

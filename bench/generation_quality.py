"""Generators measured the way the field measures them: stable, unique, novel (SUN) against the MP hull, beside the
published DFT-evaluated rows of CDVAE, DiffCSP and MatterGen on MP-20 (MatterGen's benchmark).

    PYTHONPATH=. python bench/generation_quality.py [--n 500] [--seed 0] [--no-substitution] [--bias K [--write]]

In a fresh embedded registry in a temporary folder: the shipped MP-20 sample (1,112 MP compounds with their
formation energies and energies above hull) is ingested as known structures; a seeded random sample of N of the
paper's 10,000 CDVAE samples is imported (`registry generate cdvae` on a random selection); the substitution
generator runs on the library's tunnel frameworks (`registry generate substitute --framework tunnel`); the chain
validates, relaxes (CHGNet), predicts and judges stability of every valid generated structure (exhaustive: no
screen), against the shipped MP reference set that the build loads; `registry generate metrics` figures follow.

`--bias K` also relaxes a seeded random K of the MP-20 compounds and measures the potential's E_hull bias: its E_hull
against MP's own `e_above_hull`, on the compounds above the hull and on the ground states; `--write` stores it in
registry/data/benchmarks/ehull_bias.json, which `registry generate metrics` prints beside the figures. `--n 0
--no-substitution --bias K` measures the bias alone.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner

from builders.chain import BuildOptions, build
from cli.main import cli
from cli.run_metrics import quality_table
from generators.cdvae import CDVAESamples
from generators.run import run_generator
from registry.db.client import Registry
from registry.db.run_quality import refresh, samples
from registry.db.server import EmbeddedServer
from registry.io.ingest import Ingestor
from registry.io.readers import iter_input_files, read_path
from registry.io.records import Record
from registry.science.benchmarks import write_e_hull_bias
from registry.science.metrics import GenerationTally
from registry.science.sun import STABLE_E_HULL, Sample, tally

SAMPLE = Path(__file__).resolve().parents[1] / "registry" / "data" / "sample"
CDVAE = SAMPLE / "cdvae" / "eval_gen_arrays.npz"
MP20 = SAMPLE / "mp20"


class RandomSample(CDVAESamples):
    """`n` of the file's samples drawn without replacement by a seeded generator: a selection of the same sampling
    run, as a slice is, so the run id is the file's."""

    def __init__(self, path: Path, n: int, seed: int) -> None:
        super().__init__(path)
        self.n, self.seed = n, seed
        total = self.arrays["num_atoms"].size
        self.chosen = frozenset(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False).tolist())

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), "random_sample": {"n": self.n, "seed": self.seed}}

    def generate(self, run_id: str) -> Iterator[Record]:
        per_eval = self.arrays["num_atoms"].shape[1]
        for record in super().generate(run_id):
            _, e, i = record.origin.source_id.rsplit(":", 2)
            if int(e) * per_eval + int(i) in self.chosen:
                yield record


def _stats(values: list[float]) -> dict[str, float | int]:
    return {"n": len(values), "median": round(statistics.median(values), 4),
            "mean": round(statistics.fmean(values), 4), "mae": round(statistics.fmean(abs(v) for v in values), 4)}


def bias_pairs(reg: Registry) -> list[tuple[str, float, float]]:
    """(formula, MP's E_hull, the potential's E_hull) of every relaxed MP-20 compound."""
    mined = {d["registry_id"]: d for d in reg.find(
        {"origin.kind": "mined", "reference.e_above_hull": {"$type": "number"}},
        fields=["registry_id", "formula_pretty", "reference"])}
    return [(mined[d["registry_id"]]["formula_pretty"], mined[d["registry_id"]]["reference"]["e_above_hull"],
             d["e_above_hull"]) for d in reg.find({"state": "successful"}, "stability", ["registry_id", "e_above_hull"])
            if d["registry_id"] in mined]


def measure_bias(reg: Registry, pairs: list[tuple[str, float, float]]) -> dict[str, Any]:
    """The potential's E_hull minus MP's: on the hull and above it, and the slope of ML against MP (below 1:
    unstable compounds come out too low, the softening of universal potentials)."""
    relaxed = reg.find({"state": "successful"}, "relaxed", ["potential"], limit=1)[0]["potential"]
    mp, ml = np.array([(p[1], p[2]) for p in pairs]).T
    above = mp > 0
    return {"spec": relaxed["spec"], "potential": f"{relaxed['spec']} ({relaxed['name']} {relaxed['version']})",
            "reference": f"MP-20 sample, {len(pairs)} compounds with MP's e_above_hull 0 to {mp.max():.2f} eV/atom",
            "above_hull": _stats((ml - mp)[above].tolist()), "ground_states": _stats((ml - mp)[~above].tolist()),
            "slope": round(float(np.polyfit(mp, ml, 1)[0]), 3), "measured": datetime.now(UTC).date().isoformat(),
            "by": "bench/generation_quality.py --bias"}


def sensitivity(found: list[Sample], judged_against: dict[str, Any], bias: dict[str, Any] | None) -> str:
    """How far an E_hull error moves the stable and SUN fractions: the threshold moved by +-0.025 and +-0.05
    eV/atom, and by the measured bias (an E_hull biased low by b is stable in MP's terms below 0.1 + b)."""
    shifts = [-0.05, -0.025, 0.025, 0.05] + ([bias["above_hull"]["median"]] if bias else [])
    parts = []
    for d in shifts:
        q = tally(found, STABLE_E_HULL + d, **judged_against)
        parts.append(f"{STABLE_E_HULL + d:.3f}: stable {q.stable:.3f}, SUN {q.sun:.3f}")
    hulls = sorted(s.e_above_hull for s in found if s.e_above_hull is not None)
    median = f"{statistics.median(hulls):.3f}" if hulls else "-"
    return textwrap.fill(f"median E_hull {median} eV/atom; with the stable limit at " + "; ".join(parts)
                         + (" (the last: 0.1 + the measured bias)" if bias else ""), 80, subsequent_indent="  ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="CDVAE samples drawn (of 10,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-substitution", action="store_true")
    parser.add_argument("--bias", type=int, default=0, metavar="K",
                        help="also relax K MP-20 compounds (seeded random) and measure the E_hull bias")
    parser.add_argument("--write", action="store_true", help="store the bias for `registry generate metrics`")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write every sample's outcome and the figures here (JSON)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: still stop the embedded server

    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as home:
        try:
            reg = Registry(home=home)
            t0 = time.perf_counter()
            Ingestor(reg).write(r for p in iter_input_files([MP20]) for r in read_path(p))
            runs = []
            if args.n:
                validity = GenerationTally()
                cdvae, _ = run_generator(reg, RandomSample(CDVAE, args.n, args.seed), progress=validity.observe,
                                         metrics=lambda: validity.result().as_dict())
                runs.append(cdvae.run_id)
            if not args.no_substitution:
                out = CliRunner().invoke(cli, ["--home", home, "generate", "substitute", "--framework", "tunnel"],
                                         catch_exceptions=False)
                print(out.output)
                runs += [d["run_id"] for d in reg.find({"generator": "substitution"}, "generation_runs", ["run_id"])]
            times["ingest and generate"] = time.perf_counter() - t0

            mined = sorted(d["registry_id"] for d in reg.find({"origin.kind": "mined"}, fields=["registry_id"]))
            rng = np.random.default_rng(args.seed)
            known = rng.choice(mined, size=min(args.bias, len(mined)), replace=False).tolist()
            scope = {"$or": [{"member_origins.run_id": {"$in": runs}}, {"registry_id": {"$in": known}}]}
            options = BuildOptions(scope=scope, exhaustive=True, steps=args.steps, workers=args.workers)
            for stage in ("validate", "relax", "predict", "stability"):
                t0 = time.perf_counter()
                (report,) = build(reg, stage, options, progress=False)
                times[stage] = time.perf_counter() - t0
                print(f"{stage:<10} processed {report.processed:>5}  failed {report.failed:>4}  {times[stage]:>6.0f} s")
            pairs = bias_pairs(reg) if args.bias else []
            bias = measure_bias(reg, pairs) if pairs else None
            if bias:
                print(f"E_hull bias of {bias['potential']} against MP ({bias['reference']}):")
                for part in ("above_hull", "ground_states"):
                    print(f"  {part:<14} " + ", ".join(f"{k} {v}" for k, v in bias[part].items()))
                print(f"  slope of ML against MP E_hull: {bias['slope']}\n")
                if args.write:  # before the figures are gathered, so they carry it
                    write_e_hull_bias(bias["spec"], bias)
            dump: dict[str, Any] = {"args": vars(args), "bias": bias, "bias_pairs": pairs, "runs": {}}
            for run_id, quality, _ in refresh(reg):
                print(quality_table(f"run {run_id}", quality))
                found, judged_against = samples(reg, run_id)
                print(sensitivity(found, judged_against, bias) + "\n")
                dump["runs"][run_id] = {"quality": quality.model_dump(mode="json"),
                                        "samples": [asdict(s) for s in found]}
            if args.out:
                args.out.write_text(json.dumps(dump, indent=1, default=str))
        finally:
            EmbeddedServer(Path(home)).stop()
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()) + f"; total {sum(times.values()):.0f}")


if __name__ == "__main__":
    main()

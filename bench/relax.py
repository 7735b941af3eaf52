"""Relaxation throughput: CHGNet's own StructOptimizer, one structure at a time, against the registry's relax stage.

Structures are the first --n rows of the MP-20 sample (test, then val, then train), each perturbed by up to
--perturb Å with a fixed seed. Both sides use the same CHGNet weights; |dE| compares their final energies.
Ours is the relax stage itself (builders/relax.py through builders.run.run_builder with --workers spawned
processes, each given lockstep batches of --batch-size structures) in a fresh embedded database; its wall time
includes starting the worker processes, loading the model in each (with 2 workers on 2 cores each gets one torch
thread) and the database reads and writes.

    PYTHONPATH=. python bench/relax.py --n 64 --workers 2 --ref-blas default,1

`--ref-blas 1` also runs the reference with OpenBLAS held to one thread, as `relax_batch` holds it: on a busy
machine OpenBLAS threads on the cell filter's 3x3 matrices cost more than the model, so that row separates this
fix from the rest (batching, workers, optimizer).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import threading
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import psutil
import torch
from pymatgen.core import Structure
from threadpoolctl import threadpool_limits

from builders.relax import RelaxBuilder
from builders.run import run_builder
from registry.db.client import Registry
from registry.db.server import EmbeddedServer
from registry.science.potentials import load_potential
from registry.science.relaxation import RelaxResult, RelaxSettings

MP20 = Path(__file__).resolve().parents[1] / "registry" / "data" / "sample" / "mp20"  # = shared mp20_sample


def sample_structures(n: int, perturb: float, seed: int) -> list[Structure]:
    rows = pd.concat([pd.read_csv(MP20 / f"{split}.csv") for split in ("test", "val", "train")]).head(n)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Issues encountered while parsing CIF")  # rounding notes
        structures = [Structure.from_str(cif, fmt="cif") for cif in rows.cif]
    return [s.perturb(perturb, seed=seed + i) for i, s in enumerate(structures)]


class PeakRSS:
    """Peak resident memory of this process and its children (but `exclude`: a database server it started),
    sampled every 0.1 s."""

    def __init__(self, exclude: tuple[int, ...] = ()):
        self.exclude = set(exclude)

    def __enter__(self) -> PeakRSS:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *(c for c in me.children(recursive=True) if c.pid not in self.exclude)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop.wait(0.1)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_reference(structures: list[Structure], fmax: float, steps: int) -> tuple[list[float], list[int], float]:
    """CHGNet's StructOptimizer (FIRE), one structure at a time, with whatever torch threads are set."""
    from chgnet.model.dynamics import StructOptimizer

    with contextlib.redirect_stdout(io.StringIO()):
        optimizer = StructOptimizer(model=load_potential("chgnet").model)
    energies, n_steps = [], []
    start = time.perf_counter()
    for s in structures:
        out = optimizer.relax(s, fmax=fmax, steps=steps, verbose=False)
        traj = out["trajectory"]
        energies.append(traj.energies[-1] / len(s))
        n_steps.append(len(traj) - 2)  # the observer records step 0, every step, and once more at the end
    return energies, n_steps, time.perf_counter() - start


def run_stage(structures: list[Structure], settings: RelaxSettings, workers: int,
              batch_size: int) -> list[RelaxResult]:
    """The relax stage on these structures in a fresh embedded database; results in input order."""
    with tempfile.TemporaryDirectory() as home:
        server = EmbeddedServer(Path(home))
        try:
            reg = Registry(server.ensure_running(auth=False).uri + "bench")
            now = datetime.now(UTC)
            reg.collection("validated").insert_many([
                {"registry_id": f"s{i:04d}", "formula_pretty": s.composition.reduced_formula,
                 "chemsys": s.composition.chemical_system, "elements": sorted(e.symbol for e in s.composition),
                 "nsites": len(s), "structure": s.as_dict(), "valid": True, "state": "successful",
                 "last_updated": now, "structure_updated": now} for i, s in enumerate(structures)])
            builder = RelaxBuilder(reg.store("validated", last_updated_field="structure_updated"),
                                   reg.store("relaxed"), fmax=settings.fmax, steps=settings.steps,
                                   batch_size=batch_size)
            run_builder(builder, "relax", workers=workers, progress=False)
            docs = {d["registry_id"]: d for d in reg.find(collection="relaxed")}
        finally:
            server.stop()
    return [RelaxResult(status=d.get("status", "failed"), reason=d.get("error"), steps=d.get("steps", 0),
                        final_energy_per_atom=d.get("energy_per_atom"))
            for d in (docs[f"s{i:04d}"] for i in range(len(structures)))]


def row(name: str, wall: float, structures: list[Structure], steps: list[int], converged: int, rss: int) -> str:
    atom_steps = sum(len(s) * n for s, n in zip(structures, steps, strict=True))
    return (f"{name:<46}{wall:>9.1f}{len(structures) / wall:>10.3f}{atom_steps / wall:>14.1f}"
            f"{rss / 2**20:>10.0f}{converged:>6d}/{len(structures)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fmax", type=float, default=RelaxSettings.fmax)
    parser.add_argument("--steps", type=int, default=RelaxSettings.steps)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--perturb", type=float, default=0.1, help="largest random displacement, Å")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ref-blas", type=lambda s: s.split(","), default=["default"],
                        help="OpenBLAS threads for the reference: 'default' and/or '1'")
    parser.add_argument("--ref-threads", type=lambda s: [int(t) for t in s.split(",")], default=[1],
                        help="torch threads for the reference, e.g. 1,2 (two run 10-30x slower on a busy machine)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")  # inside CHGNet

    structures = sample_structures(args.n, args.perturb, args.seed)
    print(f"{len(structures)} structures, {sum(map(len, structures))} atoms, perturbed up to {args.perturb} Å; "
          f"reference: StructOptimizer fmax 0.1, 500 steps; ours: fmax {args.fmax}, {args.steps} steps, "
          f"{args.workers} workers, batch {args.batch_size}")
    reference = {}
    for threads in args.ref_threads:
        for blas in args.ref_blas:
            torch.set_num_threads(threads)
            limit = threadpool_limits(limits=None if blas == "default" else int(blas), user_api="blas")
            with limit, PeakRSS() as mem:
                reference[f"{threads} torch thr., BLAS {blas}"] = (
                    *run_reference(structures, fmax=0.1, steps=500), mem.peak)
    settings = RelaxSettings(fmax=args.fmax, steps=args.steps)
    with PeakRSS() as mem:
        start = time.perf_counter()
        results = run_stage(structures, settings, args.workers, args.batch_size)
        wall = time.perf_counter() - start

    print(f"{'':<46}{'wall s':>9}{'struct/s':>10}{'atom-steps/s':>14}{'peak MB':>10}{'converged':>10}")
    for name, (_, ref_steps, ref_wall, ref_rss) in reference.items():
        print(row(f"StructOptimizer, {name}", ref_wall, structures, ref_steps,
                  sum(n < 500 for n in ref_steps), ref_rss))
    print(row(f"relax stage, {args.workers} workers", wall, structures, [r.steps for r in results],
              sum(r.converged for r in results), mem.peak))
    ref_e, ref_steps = next(iter(reference.values()))[:2]
    de = [abs(r.final_energy_per_atom - e) * 1000 for r, e in zip(results, ref_e, strict=True)
          if r.final_energy_per_atom is not None]
    speedups = ", ".join(f"{ref[2] / wall:.2f}x vs {name}" for name, ref in reference.items())
    print(f"speed-up {speedups}; |dE| vs reference over {len(de)} structures: median {statistics.median(de):.2f}, "
          f"max {max(de):.2f} meV/atom; optimizer steps: reference {sum(ref_steps)}, "
          f"ours {sum(r.steps for r in results)} ({settings.optimizer})")
    failed = [(i, r.status, r.reason) for i, r in enumerate(results) if r.status in ("exploded", "failed")]
    if failed:
        print("not relaxed:", failed)


if __name__ == "__main__":
    main()

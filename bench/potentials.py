"""Universal potentials compared on this CPU, on the same structures: the MP-20 sample's oxides with a transition
metal, relaxed from perturbed starts by the registry's own relaxer, against Materials Project's values.

    .venv/bin/python bench/potentials.py [--n 48] [--seed 0] [--potentials chgnet,sevenn:7net-0,sevenn:7net-l3i5]

For each potential, in a fresh process of its own (so peak memory is its own): load and model check; relaxation
of the N structures (sites displaced by up to `--rattle` Å and cell axes strained by up to `--strain`, a fixed
seed) with `relax_batch` and the registry's
defaults; formation energies against MP-20's and E_hull against the MP reference hull (the shipped reference set,
loaded into a temporary embedded registry as `registry build` loads it) against MP-20's, MAE, median and maximum
absolute error; structures and atom-steps per CPU-second of the relaxation; peak resident memory; how far its relaxed
structures lie from MP's and from the first potential's (StructureMatcher RMSD, normalised by (V/n)^(1/3)).
Every potential after the first also takes a static energy of the first potential's relaxed structures: the
two-tier rows, what `--refine-potential` computes, and how far that static energy lies above the potential's own
relaxed minimum. One torch thread everywhere (faster than two for graphs this small on a shared machine).
Prints one markdown table and the notes under it (docs/potentials.md holds a run).
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition, Element, Structure

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_SAMPLE = ROOT / "registry" / "data" / "sample" / "mp20"
SHARED_SAMPLE = Path("/work/shared/data/mp20_sample")
POTENTIALS = ("chgnet", "sevenn:7net-0", "sevenn:7net-l3i5")


def oxides(sample: Path) -> pd.DataFrame:
    """The sample's rows whose composition holds O and a transition metal, in material_id order."""
    rows = pd.concat(pd.read_csv(sample / f"{split}.csv") for split in ("train", "val", "test"))

    def wanted(formula: str) -> bool:
        elements = Composition(formula).elements
        return Element("O") in elements and any(el.is_transition_metal for el in elements)

    return rows[rows.pretty_formula.map(wanted)].sort_values("material_id").reset_index(drop=True)


def _run(spec: str, starts: list[dict], statics: list[dict | None]) -> dict:
    """In a fresh process: load, check, relax `starts`, and take static energies of `statics` (per atom)."""
    import torch

    from registry.science.potentials import checked_potential
    from registry.science.relaxation import relax_batch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    potential, info = checked_potential(spec)
    loaded = time.perf_counter() - t0
    structures = [Structure.from_dict(d) for d in starts]
    t0, c0 = time.perf_counter(), time.process_time()
    results = relax_batch(structures, potential)
    relax_wall, relax_cpu = time.perf_counter() - t0, time.process_time() - c0
    todo = [Structure.from_dict(d) for d in statics if d is not None]
    t0, c0 = time.perf_counter(), time.process_time()
    energies = iter(potential.energy_per_atom(todo))
    static = [next(energies) if d is not None else None for d in statics]
    static_wall, static_cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"name": potential.name, "version": info.version, "load_s": loaded, "relax_s": relax_wall,
            "relax_cpu_s": relax_cpu, "static_s": static_wall, "static_cpu_s": static_cpu, "n_static": len(todo),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "results": [r.as_dict() for r in results], "static": static}


def in_own_process(spec: str, starts: list[dict], statics: list[dict | None]) -> dict:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_run, spec, starts, statics).result()


def hulls(rows: pd.DataFrame) -> dict[str, object]:
    """Chemical system -> the MP reference hull, from the shipped reference set in a temporary registry."""
    from registry.db.client import Registry
    from registry.db.known import ensure_references, known_compounds
    from registry.db.server import EmbeddedServer

    with tempfile.TemporaryDirectory() as home:
        server = EmbeddedServer(Path(home))
        try:
            reg = Registry(server.ensure_running(auth=False).uri + "bench")
            reg.ensure_indexes()
            ensure_references(reg)
            known = known_compounds(reg)
            return {c: known.hull(c) for c in {Composition(f).chemical_system for f in rows.pretty_formula}}
        finally:
            server.stop()


def _errors(values: list[float]) -> str:
    """MAE / median / max of absolute errors."""
    if not values:
        return "-"
    a = [abs(v) for v in values]
    return f"{statistics.fmean(a):.3f} / {statistics.median(a):.3f} / {max(a):.3f}"


def _rmsd(a: list[Structure | None], b: list[Structure | None]) -> str:
    """Median / max RMSD over the pairs both sides have; `+k` pairs that no longer match."""
    matcher = StructureMatcher()
    found, unmatched = [], 0
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            continue
        match = matcher.get_rms_dist(x, y)
        if match is None:
            unmatched += 1
        else:
            found.append(match[0])
    if not found:
        return "-"
    return f"{statistics.median(found):.3f} / {max(found):.3f}" + (f" (+{unmatched} unmatched)" if unmatched else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=48, help="structures (48: the whole bench in ~15 min on 2 busy cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rattle", type=float, default=0.2, help="largest site displacement of the starts, Å")
    parser.add_argument("--strain", type=float, default=0.03, help="largest lattice strain of the starts, per axis")
    parser.add_argument("--potentials", default=",".join(POTENTIALS))
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="No Pauling electronegativity")  # noble gases in pymatgen's tables
    from registry.science.hull import ReferenceHull  # noqa: F401  (imports the science stack before timing)
    from registry.science.references import formation_energy_per_atom

    t_all = time.perf_counter()
    pool = oxides(SHARED_SAMPLE if SHARED_SAMPLE.is_dir() else SHIPPED_SAMPLE)
    rows = pool.iloc[sorted(random.Random(args.seed).sample(range(len(pool)), min(args.n, len(pool))))]
    mp = [Structure.from_str(c, fmt="cif") for c in rows.cif]
    rng = np.random.default_rng(args.seed)
    starts = []
    for i, s in enumerate(mp):
        start = s.copy().perturb(args.rattle, min_distance=args.rattle / 2, seed=args.seed + i)
        start.apply_strain(rng.uniform(-args.strain, args.strain, 3))
        starts.append(start)
    print(f"N = {len(rows)} of the sample's {len(pool)} transition-metal oxides ({sum(len(s) for s in mp)} atoms, "
          f"{min(len(s) for s in mp)}-{max(len(s) for s in mp)} per cell), sites rattled by up to {args.rattle} Å, cell "
          f"axes strained by up to {args.strain:.0%}, seed {args.seed}")
    t0 = time.perf_counter()
    hull = hulls(rows)
    t_hull = time.perf_counter() - t0

    def e_form(formula: str, energy: float | None) -> float | None:
        return None if energy is None else formation_energy_per_atom(Composition(formula), energy)

    def scored(energies: list[float | None]) -> tuple[str, str, int]:
        forms = [e_form(f, e) for f, e in zip(rows.pretty_formula, energies, strict=True)]
        de = [f - ref for f, ref in zip(forms, rows.formation_energy_per_atom, strict=True) if f is not None]
        dh = [hull[Composition(f).chemical_system].evaluate(f, ef).e_above_hull - ref
              for f, ef, ref in zip(rows.pretty_formula, forms, rows.e_above_hull, strict=True) if ef is not None]
        return _errors(de), _errors(dh), len(de)

    specs = args.potentials.split(",")
    runs: dict[str, dict] = {}
    first: list[Structure | None] = []
    for spec in specs:
        statics = [None] * len(rows) if not runs else [s.as_dict() if s is not None else None for s in first]
        runs[spec] = run = in_own_process(spec, [s.as_dict() for s in starts], statics)
        run["relaxed"] = [Structure.from_dict(r["structure"]) if r["status"] in ("converged", "unconverged") else None
                          for r in run["results"]]
        if not first:
            first = run["relaxed"]
        print(f"{spec}: load + model check {run['load_s']:.1f} s, relaxation {run['relax_s']:.1f} s wall, "
              f"{run['relax_cpu_s']:.1f} s CPU" + (f", {run['n_static']} statics {run['static_s']:.1f} s wall, "
                                                  f"{run['static_cpu_s']:.1f} s CPU" if run["n_static"] else ""),
              flush=True)

    head = ("potential", "converged", "E_form error vs MP (MAE / median / max)", "E_hull error vs MP (MAE / median / max)",
            "structures per CPU-s", "atom-steps per CPU-s", "steps (median)", "peak RSS MB", "RMSD to MP (median / max)",
            f"RMSD to {runs[specs[0]]['name']} (median / max)", "static at tier-one geometry - own minimum (median / max)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for spec, run in runs.items():
        results = run["results"]
        ok = [r for r in results if r["status"] in ("converged", "unconverged")]
        final = [r["final_energy_per_atom"] if r["status"] in ("converged", "unconverged") else None for r in results]
        ef, eh, _ = scored(final)
        atom_steps = sum(r["steps"] * len(s) for r, s in zip(results, mp, strict=True))
        above = [s - e for s, e in zip(run["static"], final, strict=True) if s is not None and e is not None]
        lines.append("| " + " | ".join((
            f"{run['name']} (`{spec}`)", f"{sum(r['converged'] for r in results)}/{len(results)}", ef, eh,
            f"{len(results) / run['relax_cpu_s']:.2f}", f"{atom_steps / run['relax_cpu_s']:.0f}",
            f"{statistics.median(r['steps'] for r in ok):.0f}" if ok else "-", f"{run['peak_rss_mb']:.0f}",
            _rmsd(run["relaxed"], mp), "-" if spec == specs[0] else _rmsd(run["relaxed"], first),
            f"{statistics.median(above) * 1000:+.1f} / {max(above) * 1000:+.1f} meV/atom" if above else "-")) + " |")
    for run in list(runs.values())[1:]:
        ef, eh, n = scored(run["static"])
        lines.append("| " + " | ".join((
            f"two tiers: {runs[specs[0]]['name']} relaxation, {run['name']} static", f"{n}/{len(rows)}", ef, eh,
            f"{run['n_static'] / run['static_cpu_s']:.2f} (static)", "-", "-", "-", "-", "-", "-")) + " |")
    print("\n".join(lines))
    tier_one = [r["final_energy_per_atom"] if r["status"] in ("converged", "unconverged") else None
                for r in runs[specs[0]]["results"]]
    for run in list(runs.values())[1:]:
        drop = sorted(a - b for a, b in zip(tier_one, run["static"], strict=True) if a is not None and b is not None)
        if drop:
            print(f"\n{runs[specs[0]]['name']} minus {run['name']} static E_form: median {statistics.median(drop):+.3f}, "
                  f"95th percentile {drop[int(0.95 * (len(drop) - 1))]:+.3f}, max {drop[-1]:+.3f} eV/atom (how far "
                  "the second tier can bring a structure below the first tier's E_hull: the refine margin's measure)")
    print(f"\nMAE etc. in eV/atom; RMSD normalised by (V/n)^(1/3). Rates per CPU-second of the process (one torch "
          "thread: on an idle core, per second; CPU time is what a busy shared machine cannot distort), the "
          f"relaxation alone: {len(rows)} structures in batches of 8 (the registry's default), BFGS to fmax 0.1 eV/Å, "
          "up to 500 steps; "
          "peak RSS includes Python and torch. Two-tier rows: E_form and E_hull from the second potential's static "
          "energy on the first potential's relaxed structures, and the rate of those statics. Reference hull loaded "
          f"in {t_hull:.0f} s; the whole bench took {(time.perf_counter() - t_all) / 60:.1f} min.")


if __name__ == "__main__":
    main()

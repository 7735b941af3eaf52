"""Where a relaxation's time goes: cProfile of `relax_batch` on CDVAE samples, one process, one torch thread.

    PYTHONPATH=. python bench/profile_relax.py [--n 8] [--blas 1|default] [--top 12]

`--blas default` lifts the registry's one-thread OpenBLAS limit, to see what it saves. The difference shows when
other processes share the cores (run it beside a build); on an idle machine the two are close.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import torch

from generators.cdvae import CDVAESamples
from registry import relaxation
from registry.science.potentials import load_potential
from registry.science.relaxation import RelaxSettings, relax_batch
from registry.science.validity import structure_problem

SAMPLES = Path(__file__).resolve().parents[1] / "registry" / "data" / "sample" / "cdvae" / "eval_gen_arrays.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="oxides among the first samples, valid structures only")
    parser.add_argument("--blas", choices=["1", "default"], default="1")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    structures = [r.structure for r in CDVAESamples(SAMPLES, limit=500).generate("profile")
                  if r.structure is not None and "O" in r.structure.composition.as_dict()
                  and structure_problem(r.structure) is None][: args.n]
    potential = load_potential("chgnet")
    unlimited = mock.patch.object(relaxation, "threadpool_limits", lambda **_: nullcontext())
    with unlimited if args.blas == "default" else nullcontext():
        profile = cProfile.Profile()
        start = time.perf_counter()
        profile.enable()
        results = relax_batch(structures, potential, RelaxSettings())
        profile.disable()
        wall = time.perf_counter() - start
    print(f"{len(structures)} structures ({sum(map(len, structures))} atoms), OpenBLAS threads: {args.blas}; "
          f"{wall:.1f} s; steps {[r.steps for r in results]}")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()

"""One relaxer for every potential: an ASE optimizer on a FrechetCellFilter, as CHGNet's `StructOptimizer` does.

Several relaxations advance in lockstep so that each step needs one batched forward pass for all of them
(`relax_batch`); a finished one makes room for the next structure. Each ASE optimizer takes its forces from a
SinglePointCalculator filled by that pass, so the optimizer and the filter are ASE's own, unchanged.
Many structures over many processes: the relax stage (builders/relax.py) with `--workers`. A relaxation that
fails ends as a result with a reason, never an exception.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Literal

import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS, FIRE, LBFGS
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor
from threadpoolctl import threadpool_limits

from registry.science.validity import structure_problem

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ase import Atoms

    from registry.science.potentials import Evaluation, Potential

Status = Literal["converged", "unconverged", "exploded", "failed"]
# optimizers that evaluate once per step, as the lockstep needs (FIRE2 re-evaluates inside a step)
OPTIMIZERS = {"FIRE": FIRE, "BFGS": BFGS, "LBFGS": LBFGS}
# A relaxed cell more than 20% larger or smaller than its input is another structure than the one that went in
# (thermal expansion and insertion swell oxides by a few %, the worst intercalation hosts by ~10%): the potential
# found a hole, or the input was far from any minimum. Its energy is not the input's.
MAX_VOLUME_CHANGE = 0.2


@dataclass(frozen=True)
class RelaxSettings:
    """How to relax, and when to give up.

    A relaxation "explodes" when energy, forces or stress stop being finite, when the cell volume leaves
    [1/max_volume_factor, max_volume_factor] times its start, or when |energy| exceeds max_abs_energy_per_atom
    (Materials Project total energies lie within about -15..0 eV/atom; beyond 20 the model is in a hole).

    The optimizer is ASE's BFGS, not StructOptimizer's FIRE: with CHGNet it needed 1.4-2.2x fewer steps and
    ended within a median 0.2-2.4 meV/atom of FIRE (mostly lower), on MP-20 crystals rattled by 0.1-0.3 Å and on
    CDVAE-generated oxides (bench/relax.py). optimizer="FIRE" reproduces StructOptimizer step for step.
    """

    fmax: float = 0.1  # eV/Å, on atoms and (through the filter) on the cell, as in StructOptimizer
    steps: int = 500
    relax_cell: bool = True
    max_volume_factor: float = 2.0
    max_abs_energy_per_atom: float = 20.0
    optimizer: str = "BFGS"  # a key of OPTIMIZERS
    optimizer_kwargs: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; use one of {sorted(OPTIMIZERS)}")


@dataclass
class RelaxResult:
    """The outcome of one relaxation. Energies are per atom in the potential's scale (MP2020 for CHGNet).

    `rmsd` is StructureMatcher's RMS displacement of final vs input, normalised by (V/n)^(1/3); None if
    they no longer match. `max_force` is ASE's convergence measure (atoms and cell) at the last step;
    converged means max_force < fmax, as in ASE. An exploded result keeps the last geometry for inspection.
    """

    status: Status
    reason: str | None = None
    structure: Structure | None = None
    initial_energy_per_atom: float | None = None
    final_energy_per_atom: float | None = None
    steps: int = 0
    max_force: float | None = None
    volume_change: float | None = None
    rmsd: float | None = None

    @property
    def converged(self) -> bool:
        return self.status == "converged"

    @property
    def warnings(self) -> list[str]:
        """Why the relaxed structure may not be the input's own minimum (empty: nothing to say)."""
        if self.status not in ("converged", "unconverged"):
            return []
        return sanity_warnings(self.volume_change, self.rmsd)

    def as_dict(self) -> dict:
        """JSON-ready, with the structure as a pymatgen dict."""
        d = {f.name: getattr(self, f.name) for f in fields(self)} | {"converged": self.converged,
                                                                    "warnings": self.warnings}
        d["structure"] = self.structure.as_dict() if self.structure is not None else None
        return d


class _Relaxation:
    """One structure on its way down: its Atoms, its optimizer, and its first and latest energy."""

    def __init__(self, index: int, structure: Structure, settings: RelaxSettings):
        problem = structure_problem(structure)
        if problem:
            raise ValueError(problem)
        self.index, self.input, self.settings = index, structure, settings
        self.atoms = AseAtomsAdaptor.get_atoms(structure)
        self.volume0 = self.atoms.get_volume()
        target = FrechetCellFilter(self.atoms) if settings.relax_cell else self.atoms
        self.opt = OPTIMIZERS[settings.optimizer](target, logfile=None, **settings.optimizer_kwargs)
        self.first_energy = self.energy = math.nan  # eV/atom
        self.max_force: float | None = None

    @property
    def steps(self) -> int:
        return self.opt.nsteps

    def advance(self, evaluation: Evaluation | Exception) -> RelaxResult | None:
        """Take the forces at the current geometry; step, or return the result if this relaxation is over."""
        if isinstance(evaluation, Exception):
            if not self.steps:
                return self._finish("failed", f"the potential cannot evaluate the input: {evaluation}")
            return self._finish("exploded", f"the potential failed at step {self.steps}: {evaluation}")
        self.energy = evaluation.energy / len(self.atoms)
        if not self.steps:
            self.first_energy = self.energy
        problem = self._explosion(evaluation)
        if problem:
            return self._finish("exploded", f"{problem} at step {self.steps}")
        self.atoms.calc = SinglePointCalculator(self.atoms, energy=evaluation.energy, free_energy=evaluation.energy,
                                                forces=evaluation.forces, stress=evaluation.stress)
        optimizable = self.opt.optimizable
        gradient = optimizable.get_gradient()
        self.max_force = float(optimizable.gradient_norm(gradient))
        if optimizable.converged(gradient, self.settings.fmax):
            return self._finish("converged")
        if self.steps >= self.settings.steps:
            return self._finish("unconverged", f"max force {self.max_force:.3f} eV/Å after {self.steps} steps")
        self.opt.step()
        self.opt.nsteps += 1
        return None

    def _explosion(self, evaluation: Evaluation) -> str | None:
        e = self.energy
        if not math.isfinite(e):
            return f"energy is {e}"
        if not (np.isfinite(evaluation.forces).all() and np.isfinite(evaluation.stress).all()):
            return "forces or stress are not finite"
        if abs(e) > self.settings.max_abs_energy_per_atom:
            return f"energy {e:.1f} eV/atom is beyond ±{self.settings.max_abs_energy_per_atom}"
        ratio = self.atoms.get_volume() / self.volume0
        f = self.settings.max_volume_factor
        if not 1 / f <= ratio <= f:
            return f"volume changed {ratio:.2f}x (limit {f}x)"
        return None

    def _finish(self, status: Status, reason: str | None = None) -> RelaxResult:
        if status == "failed":
            return RelaxResult(status, reason)
        final = Structure(Lattice(self.atoms.cell.array), [site.species for site in self.input], self.atoms.positions,
                          coords_are_cartesian=True, site_properties=self.input.site_properties)
        problem = structure_problem(final) if status != "exploded" else None
        if problem:  # a hole in the potential pulled atoms together, or the cell collapsed
            status, reason = "exploded", f"relaxed into an unphysical structure: {problem}"
        return RelaxResult(
            status, reason, final,
            initial_energy_per_atom=self.first_energy if math.isfinite(self.first_energy) else None,
            final_energy_per_atom=self.energy if math.isfinite(self.energy) else None,
            steps=self.steps, max_force=self.max_force,
            volume_change=final.volume / self.input.volume - 1,
            rmsd=_rmsd(final, self.input) if status != "exploded" else None)


def sanity_warnings(volume_change: float | None, rmsd: float | None) -> list[str]:
    """A relaxation whose volume moved by more than MAX_VOLUME_CHANGE, or whose result StructureMatcher no longer
    matches to its input (`rmsd` None), relaxed into something else: the reasons, empty when neither happened."""
    out = []
    if volume_change is not None and abs(volume_change) > MAX_VOLUME_CHANGE:
        out.append(f"volume changed by {volume_change:+.0%} on relaxation (limit ±{MAX_VOLUME_CHANGE:.0%})")
    if rmsd is None:
        out.append("the relaxed structure no longer matches its input (StructureMatcher)")
    return out


def _rmsd(final: Structure, initial: Structure) -> float | None:
    match = StructureMatcher().get_rms_dist(final, initial)
    return None if match is None else float(match[0])


def _evaluate(potential: Potential, atoms: list[Atoms]) -> list[Evaluation | Exception]:
    """One batched pass; if it raises, again one by one so that only the culprit fails."""
    try:
        return list(potential.evaluate(atoms))
    except Exception as exc:
        if len(atoms) == 1:
            return [exc]
    return [_evaluate(potential, [a])[0] for a in atoms]


def relax_batch(structures: Sequence[Structure], potential: Potential, settings: RelaxSettings | None = None,
                batch_size: int = 8) -> list[RelaxResult]:
    """Relax structures in this process, up to `batch_size` at a time through one forward pass; input order."""
    settings = settings or RelaxSettings()
    # The cell filter and BFGS do thousands of 3x3 to 3Nx3N linear-algebra calls per relaxation. OpenBLAS threads
    # on matrices that small only contend: on 2 busy cores they took 75% of a relaxation's time (bench/relax.py).
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        # the cell filter's matrix logarithm reports round-off (~1e-13) as a warning, once per step
        warnings.filterwarnings("ignore", message="logm result may be inaccurate")
        return _relax_batch(structures, potential, settings, batch_size)


def _relax_batch(structures: Sequence[Structure], potential: Potential, settings: RelaxSettings,
                 batch_size: int) -> list[RelaxResult]:
    results: list[RelaxResult | None] = [None] * len(structures)
    waiting = deque(enumerate(structures))
    active: list[_Relaxation] = []
    while waiting or active:
        while waiting and len(active) < batch_size:
            i, structure = waiting.popleft()
            try:
                active.append(_Relaxation(i, structure, settings))
            except Exception as exc:  # disordered, empty or not a Structure at all
                results[i] = RelaxResult("failed", f"cannot relax this input: {exc!r}")
        if not active:
            continue
        evaluations = _evaluate(potential, [r.atoms for r in active])
        still = []
        for run, evaluation in zip(active, evaluations, strict=True):
            try:
                result = run.advance(evaluation)
            except Exception as exc:  # the optimizer or the final analysis broke on this structure
                result = RelaxResult("failed", f"relaxation broke at step {run.steps}: {exc!r}")
            if result is None:
                still.append(run)
            else:
                results[run.index] = result
        active = still
    return results  # type: ignore[return-value]


def relax(structure: Structure, potential: Potential, settings: RelaxSettings | None = None) -> RelaxResult:
    """Relax one structure; problems come back in the result, never raised."""
    return relax_batch([structure], potential, settings)[0]

"""Stable, unique, novel (SUN): a generation run judged on the definitions of MatterGen's benchmark, so its
figures can be set beside the published ones (Zeni et al., Nature 2025; microsoft/mattergen,
mattergen/evaluation/metrics/{energy,structure}.py).

- stable: E_hull <= 0.1 eV/atom against the reference hull after relaxation; MatterGen divides by every submitted
  job, so here every sample counts, and one never relaxed (a reject, an invalid structure, a failed relaxation, one
  the build has not reached) is not stable;
- unique: the first of each set of StructureMatcher duplicates within the run counts as unique, the others not;
- novel: no known structure matches; SUN: novel, unique and stable, over every sample;
- averages (E_hull, RMSD from relaxation) over the samples that have one.

The registry decides uniqueness and novelty in the validate stage, on the generated structures of the samples
that pass validation; MatterGen decides them on the relaxed structures of every sample. What that changes is in
docs/generators.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Any

import numpy as np
from pymatgen.core import Structure

from schemas.generation import RunQuality
from schemas.stability import FAR_BELOW_HULL

STABLE_E_HULL = 0.1  # eV/atom, MatterGen's DEFAULT_STABILITY_THRESHOLD


@dataclass(frozen=True)
class Sample:
    """What the build found for one generated sample. None: the stage has not decided (or never will)."""

    parsed: bool = True  # False: a reject, the generator's output could not be read as a structure
    valid: bool | None = None  # SMACT composition and structure validity; None: not validated yet
    cluster: str | None = None  # StructureMatcher cluster (the validated document); None: not compared
    novel: bool | None = None  # no known structure matches
    formula_known: bool | None = None  # a reference set or a known structure has the composition
    relaxed: bool | None = None  # None: no relaxation; False: it failed
    failed: bool = False  # relaxation, prediction or stability failed
    rmsd: float | None = None  # Å, generated to relaxed
    e_above_hull: float | None = None  # eV/atom


def relaxation_rmsd(generated: Structure, relaxed: Structure) -> float:
    """RMS displacement (Å) of the atoms from the generated to the relaxed structure, site by site (relaxation keeps
    the sites' order): fractional displacements taken to the nearest image, the net translation removed, in the
    relaxed cell. Unlike StructureMatcher's RMS it is dimensioned and exists for every relaxation."""
    if len(generated) != len(relaxed):
        raise ValueError(f"{len(generated)} sites generated, {len(relaxed)} relaxed: not the same structure")
    shift = relaxed.frac_coords - generated.frac_coords
    shift -= np.round(shift)
    shift -= shift.mean(axis=0)
    cartesian = relaxed.lattice.get_cartesian_coords(shift)
    return float(np.sqrt((cartesian**2).sum(axis=1).mean()))


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return fmean(values) if values else None


def tally(samples: Sequence[Sample], stable_e_hull: float = STABLE_E_HULL, reference_sets: Sequence[str] = (),
          potentials: Sequence[str] = (), e_hull_bias: dict[str, Any] | None = None) -> RunQuality:
    """The run's counts and fractions, with what they were judged against stored beside them."""
    compared = [s for s in samples if s.cluster is not None]
    evaluated = [s for s in samples if s.e_above_hull is not None]
    stable = [s for s in evaluated if s.e_above_hull <= stable_e_hull]
    relaxed = [s for s in samples if s.relaxed]
    return RunQuality(
        n_samples=len(samples), n_rejected=sum(not s.parsed for s in samples),
        n_validated=sum(s.valid is not None for s in samples), n_valid=sum(bool(s.valid) for s in samples),
        n_compared=len(compared), n_unique=len({s.cluster for s in compared}),
        n_novel=sum(bool(s.novel) for s in compared),
        n_novel_composition=sum(s.formula_known is False for s in samples if s.valid is not None),
        n_relaxed=len(relaxed), n_failed=sum(s.failed for s in samples),
        n_failed_relaxation=sum(s.relaxed is False for s in samples),
        n_pending=sum(not s.failed and s.e_above_hull is None for s in compared),
        n_evaluated=len(evaluated), n_stable=len(stable),
        n_sun=len({s.cluster for s in stable if s.novel and s.cluster is not None}),
        n_sun_composition=len({s.cluster for s in stable if s.formula_known is False and s.cluster is not None}),
        n_far_below_hull=sum(s.e_above_hull < -FAR_BELOW_HULL for s in evaluated),
        n_rmsd=sum(s.rmsd is not None for s in relaxed),
        mean_e_above_hull=_mean(s.e_above_hull for s in evaluated),
        mean_rmsd=_mean(s.rmsd for s in relaxed if s.rmsd is not None),
        stable_e_hull=stable_e_hull, reference_sets=list(reference_sets), potentials=list(potentials),
        e_hull_bias=e_hull_bias)

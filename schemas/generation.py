"""A generation run: what was asked of a generator and what came out, so a run can be judged and redone."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, computed_field


def _fraction(count: int, of: int) -> float | None:
    return count / of if of else None


class RunQuality(BaseModel):
    """A run's figures on MatterGen's definitions (registry/science/sun.py), with the count each one rests on.

    Every sample the run yielded is counted: a reject, an invalid structure, a failed relaxation or a structure
    not yet evaluated is in `n_samples` and is not stable, so `stable` and `sun` are over all samples as in
    MatterGen's benchmark; `stable_evaluated` is over the samples that have an E_hull.
    """

    n_samples: int = Field(description="Records the run yielded that are in the registry: structures and rejects")
    n_rejected: int = Field(description="Samples that never became a structure (unparsable)")
    n_validated: int = Field(description="Structures the validate stage has judged")
    n_valid: int = Field(description="SMACT-valid composition and valid structure (CDVAE's and MatterGen's validity)")
    n_compared: int = Field(description="Structures that passed validation, so were deduplicated and compared with "
                                        "known structures (the registry's stricter checks: volume, covered elements)")
    n_unique: int = Field(description="Distinct structures among the compared ones (StructureMatcher, within the run)")
    n_novel: int = Field(description="Compared structures no known (mined) structure matches")
    n_novel_composition: int = Field(description="Validated structures whose reduced formula no reference set or "
                                                 "known structure has")
    n_relaxed: int = Field(description="Structures with a successful relaxation (converged or not)")
    n_failed: int = Field(description="Structures whose relaxation, prediction or stability failed")
    n_failed_relaxation: int
    n_pending: int = Field(description="Compared structures without an E_hull or a failure yet: out of the build's "
                                       "scope, held back by its screen, or not built yet")
    n_evaluated: int = Field(description="Structures with an E_hull")
    n_stable: int = Field(description="E_hull <= stable_e_hull")
    n_sun: int = Field(description="Distinct structures that are novel and stable")
    n_sun_composition: int = Field(description="Distinct stable structures of a composition no reference set has")
    n_far_below_hull: int = Field(description="E_hull more than 0.2 eV/atom below the hull: more often a model or "
                                              "structure error than a discovery; they pull the mean down")
    n_rmsd: int = Field(description="Relaxations with an RMSD")
    mean_e_above_hull: float | None = Field(description="eV/atom, over the evaluated structures")
    mean_rmsd: float | None = Field(description="Å, RMS displacement from the generated to the relaxed structure")
    stable_e_hull: float = Field(description="eV/atom: stable at or below this E_hull (MatterGen's 0.1)")
    reference_sets: list[str] = Field(default_factory=list, description="The hull's reference sets (name, hash)")
    potentials: list[str] = Field(default_factory=list, description="Potentials of the relaxations")
    e_hull_bias: dict[str, Any] | None = Field(None, description="The potential's measured E_hull bias against MP "
                                                                 "(registry/data/benchmarks/ehull_bias.json)")
    updated: datetime = Field(default_factory=lambda: datetime.now(UTC), description="When the figures last changed")

    @computed_field(description="Valid samples over all samples")
    def valid(self) -> float | None:
        return _fraction(self.n_valid, self.n_samples)

    @computed_field(description="Distinct over compared structures")
    def unique(self) -> float | None:
        return _fraction(self.n_unique, self.n_compared)

    @computed_field(description="Novel over compared structures")
    def novel(self) -> float | None:
        return _fraction(self.n_novel, self.n_compared)

    @computed_field(description="Unknown compositions over validated structures")
    def novel_composition(self) -> float | None:
        return _fraction(self.n_novel_composition, self.n_validated)

    @computed_field(description="Stable over all samples (MatterGen's frac_stable_structures)")
    def stable(self) -> float | None:
        return _fraction(self.n_stable, self.n_samples)

    @computed_field(description="Stable over the structures with an E_hull")
    def stable_evaluated(self) -> float | None:
        return _fraction(self.n_stable, self.n_evaluated)

    @computed_field(description="Novel, unique and stable over all samples (MatterGen's SUN)")
    def sun(self) -> float | None:
        return _fraction(self.n_sun, self.n_samples)

    @computed_field(description="SUN with novelty judged by composition alone, over all samples")
    def sun_composition(self) -> float | None:
        return _fraction(self.n_sun_composition, self.n_samples)


class GenerationRunDoc(BaseModel):
    run_id: str
    generator: str
    version: str
    parameters: dict[str, Any]
    produced: int = Field(description="Samples the generator yielded (parsed or not)")
    parsed: int = Field(description="Samples that became structure documents (new, updated or unchanged)")
    rejected: int
    reject_reasons: dict[str, int] = Field(default_factory=dict)
    filtered: int = Field(0, description="Parsed samples dropped by the user's filters (not rejects)")
    metrics: dict[str, Any] = Field(default_factory=dict, description="e.g. CDVAE validity fractions")
    quality: RunQuality | None = Field(None, description="Stable, unique, novel after the build "
                                                         "(`registry generate metrics`)")
    seconds: float
    started: datetime
    last_updated: datetime = Field(default_factory=lambda: datetime.now(UTC))

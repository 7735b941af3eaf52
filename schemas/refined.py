"""The refine stage's document: the second tier's energy of a relaxed structure, or why it was not computed."""

from __future__ import annotations

from pydantic import Field

from schemas.relaxed import PotentialInfo
from schemas.stage import StageDoc


class RefinedDoc(StageDoc):
    """One per successfully relaxed structure. `refined` says whether the accurate potential took it: only those
    whose tier-one E_hull was within the cut (the preset's limit plus the refine margin) when it was decided."""

    formula_pretty: str
    chemsys: str
    refined: bool = Field(description="Whether the second tier's energy was computed")
    tier_one_energy_per_atom: float = Field(description="The relaxation's energy (eV/atom, MP2020-compatible)")
    tier_one_e_above_hull: float = Field(description="eV/atom above the reference hull from the relaxation's energy: "
                                                     "what decides whether the second tier takes the structure")
    energy_per_atom: float | None = Field(None, description="The second tier's static energy of the relaxed "
                                                            "structure (eV/atom, MP2020-compatible)")
    formation_energy_per_atom: float | None = Field(None, description="eV/atom, from `energy_per_atom`")
    potential: PotentialInfo | None = Field(None, description="The second tier's potential")
    reason: str | None = Field(None, description="Why the second tier did not take it")

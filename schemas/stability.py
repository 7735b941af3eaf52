"""The stability stage's document: energy above the convex hull, against known compounds."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from schemas.stage import StageDoc


class StabilityDoc(StageDoc):
    formula_pretty: str
    chemsys: str
    formation_energy_per_atom: float
    e_above_hull: float = Field(description="eV/atom above the hull of known (mined) compounds; negative: below it")
    e_above_hull_all: float = Field(description="eV/atom above the hull of known compounds plus every predicted "
                                                "structure of the same chemical system")
    decomposition: dict[str, float] = Field(description="Decomposition products on the reference hull: id -> fraction")
    n_references: int = Field(description="Known compounds (not elements) in this system and its subsystems")
    n_references_same_system: int = Field(description="Known compounds with exactly this chemical system")
    thin_hull: bool = Field(description="The hull has no known compound in this exact system: a low E_hull is then "
                                        "weak evidence of stability")
    reference_source: str
    sources_updated: datetime
    references_updated: datetime | None = None

"""The screen stage's document: one static energy of the unrelaxed structure, and whether relaxing it can pay."""

from __future__ import annotations

from pydantic import Field

from schemas.relaxed import PotentialInfo
from schemas.stage import StageDoc


class ScreenedDoc(StageDoc):
    formula_pretty: str
    chemsys: str
    static_energy_per_atom: float
    static_formation_energy_per_atom: float
    static_e_above_hull: float = Field(description="eV/atom above the reference hull before relaxation (an upper "
                                                   "bound: relaxing only lowers the energy)")
    e_above_hull_threshold: float = Field(description="The preset's E_hull limit")
    margin: float = Field(description="How far (eV/atom) relaxation is allowed to bring a structure down")
    passed: bool = Field(description="static_e_above_hull <= threshold + margin: worth relaxing")
    reason: str | None = None
    potential: PotentialInfo

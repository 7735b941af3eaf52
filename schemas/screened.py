"""The screen stage's document: one static energy of the unrelaxed structure, on which relaxing is decided."""

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
                                                   "bound: relaxing only lowers the energy). The relax stage takes "
                                                   "structures with static_e_above_hull <= preset limit + margin")
    potential: PotentialInfo

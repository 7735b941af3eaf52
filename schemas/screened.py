"""The screen stage's document: what the unrelaxed structure tells before relaxing it (one static energy, the
free sphere each working ion would have), on which relaxing is decided."""

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
    static_free_sphere: dict[str, float | None] = Field(
        default_factory=dict, description="Zeo++ Df (Å) of each working ion's framework, unrelaxed; None where it "
                                          "could not be computed. A preset that needs the channel to admit the ion "
                                          "relaxes only structures with Df >= 2 r(ion) - channel margin (or None)")
    static_channel_error: str | None = Field(None, description="why no free sphere could be computed")
    potential: PotentialInfo

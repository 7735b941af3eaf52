"""The insertion stage's document: for one framework, the ML insertion path and electrode of each working ion."""

from __future__ import annotations

from pydantic import Field, computed_field

from registry.insertion import IonInsertion
from schemas.relaxed import PotentialInfo
from schemas.stage import StageDoc


class InsertionDoc(StageDoc):
    """`failed` only when no ion gave an electrode; each ion has its own state and reason in `ions`.

    The per-ion numbers (`average_voltage`, ...) are stored flat, ion -> value like the tunnels stage's `admits`,
    so that queries and rank criteria read them as `average_voltage.Mg` without the electrode documents."""

    formula_pretty: str
    chemsys: str
    potential: PotentialInfo
    ions: dict[str, IonInsertion] = Field(description="working-ion element -> its insertion path and electrode")
    skipped_ions: dict[str, str] = Field(default_factory=dict, description="requested ions not tried, and why")

    def _electrode_value(self, name: str) -> dict[str, float | None]:
        return {ion: getattr(r.electrode, name) if r.electrode else None for ion, r in self.ions.items()}

    @computed_field(description="V against the working-ion metal, averaged over the path")
    @property
    def average_voltage(self) -> dict[str, float | None]:
        return self._electrode_value("average_voltage")

    @computed_field(description="mAh per g of the discharged (ion-containing) state")
    @property
    def capacity_grav(self) -> dict[str, float | None]:
        return self._electrode_value("capacity_grav")

    @computed_field(description="Wh per kg of the discharged state")
    @property
    def energy_grav(self) -> dict[str, float | None]:
        return self._electrode_value("energy_grav")

    @computed_field(description="max(V) / min(V) - 1 over the path (a fraction)")
    @property
    def max_delta_volume(self) -> dict[str, float | None]:
        return self._electrode_value("max_delta_volume")

    @computed_field(description="E_hull (eV/atom) of the most discharged state")
    @property
    def stability_discharge(self) -> dict[str, float | None]:
        return self._electrode_value("stability_discharge")

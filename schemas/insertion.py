"""The insertion stage's document: for one framework, the ML insertion path and electrode of each working ion."""

from __future__ import annotations

from typing import Literal

from emmet.core.electrode import InsertionElectrodeDoc
from pydantic import BaseModel, Field, computed_field

from schemas.relaxed import PotentialInfo
from schemas.stage import StageDoc
from schemas.tunnels import MAX_BARRIER, RESOLUTION


class InsertionSettings(BaseModel):
    """The caps that bound the cost, and the geometry rules; stored with every result so it can be redone."""

    max_sites: int = Field(4, description="symmetry-distinct BVSE sites tried")
    max_levels: int = Field(2, description="ion contents between the empty host and the maximum")
    max_configurations: int = Field(2, description="orderings relaxed per ion content")
    min_separation: float = Field(2.6, description="Å between two inserted ions (Al-Al in corundum is 2.65)")
    max_atoms: int = Field(64, description="largest host supercell")
    max_energy: float = Field(MAX_BARRIER, description="eV above the BVSE minimum: the open-channel region")
    resolution: float = Field(RESOLUTION, description="BVSE grid spacing (Å); coarsened for large cells")
    fmax: float = 0.1
    steps: int = 200


class InsertionSite(BaseModel):
    """One symmetry orbit of BVSE minima in the framework's unit cell."""

    frac_coords: tuple[float, float, float] = Field(description="representative, fractional, framework unit cell")
    bvse_energy: float = Field(description="eV above the lowest BVSE point of the cell")
    multiplicity: int = Field(description="positions of this orbit in the unit cell")
    min_distance: float = Field(description="Å to the nearest framework atom")
    nearest: str = Field(description="that atom's species")


class ReducibleMetal(BaseModel):
    element: str
    sites: int = Field(description="in the framework's unit cell")
    oxidation_state: float = Field(description="mean over those sites")
    floor: int | None = Field(description="lowest oxidation state counted (registry/data/redox/floors.csv); None: "
                                          "not in that table, no electron counted")
    electrons: float = Field(description="per unit cell, all sites down to the floor")


class Relaxation(BaseModel):
    """One relaxed state: the empty host (n_ions 0) or one configuration."""

    n_ions: int = Field(description="ions in the simulation cell")
    sites: list[int] = Field(default_factory=list, description="orbit index of each ion (into `sites`)")
    status: str
    reason: str | None = None
    energy_per_atom: float | None = None
    steps: int
    volume_change: float | None = None
    kept: bool = Field(False, description="lowest energy of its ion count: an entry of the electrode")
    e_above_hull: float | None = Field(None, description="eV/atom above the reference hull of the full chemical "
                                                         "system with the path's states added (kept states only)")


class MetalReference(BaseModel):
    """The working-ion metal relaxed with the same potential: the anode of every voltage."""

    prototype: str
    energy_per_atom: float
    status: str
    steps: int
    volume_per_atom: float


class ConversionReaction(BaseModel):
    """The working ion converting the host into the reference hull's phases instead of entering its channels, over
    the same ion content as the insertion path (registry.science.conversion)."""

    reaction: str | None = Field(description="per host formula unit, e.g. 'FeHO2 + 0.5 Mg -> 0.5 Mg(HO)2 + FeO'; "
                                             "None: the hull has no compound to convert to (voltage 0)")
    ions: float = Field(description="working ions per host formula unit (the discharged state's)")
    voltage: float = Field(description="V vs the metal, formation energies on the MP elemental references")
    intercalation_voltage: float = Field(description="the insertion path's average voltage on that same scale")
    preferred: bool = Field(description="conversion gives the higher voltage: the host would convert")
    products: list[str] = Field(description="the hull phases it gives (reference ids; 'host' for unreacted host)")


class IonInsertion(BaseModel):
    """One framework and one working ion: what was tried, what was skipped, what came out."""

    ion: str = Field(description="species, e.g. 'Mg2+'")
    state: Literal["successful", "failed"] = "successful"
    error: str | None = None
    model: str = Field(description="the potential, name [version]")
    settings: InsertionSettings
    oxidation_state_source: str | None = None
    reducible: list[ReducibleMetal] = Field(default_factory=list)
    electrons_per_cell: float | None = Field(None, description="that the transition metals can take, unit cell")
    supercell: tuple[int, int, int] | None = Field(None, description="diagonal repeat of the unit cell used")
    max_ions: int | None = Field(None, description="per supercell: min(electron limit, site limit)")
    electron_limit: int | None = None
    site_limit: int | None = None
    levels: list[int] = Field(default_factory=list, description="ion counts per supercell that were relaxed")
    levels_skipped: int = Field(0, description="ion counts below max_ions not tried (max_levels)")
    sites_found: int = 0
    sites: list[InsertionSite] = Field(default_factory=list, description="the orbits tried, lowest BVSE first")
    sites_skipped: int = Field(0, description="orbits found beyond max_sites")
    configurations_skipped: int = Field(0, description="distinct orderings beyond max_configurations")
    relaxations: list[Relaxation] = Field(default_factory=list, description="host first")
    working_ion_reference: MetalReference | None = None
    stability_reference: str | None = None
    n_references: int | None = Field(None, description="known compounds in the hull's chemical system")
    stability_error: str | None = None
    electrode: InsertionElectrodeDoc | None = None
    conversion: ConversionReaction | None = None
    conversion_error: str | None = Field(None, description="why no conversion reaction could be computed")
    wall_s: float = 0.0

    @computed_field(description="V vs the metal of the conversion over the path's ion content (formation-energy scale)")
    @property
    def conversion_voltage(self) -> float | None:
        return self.conversion.voltage if self.conversion else None

    @computed_field(description="conversion gives a higher voltage than intercalation: the host would convert")
    @property
    def conversion_preferred(self) -> bool | None:
        return self.conversion.preferred if self.conversion else None


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

    @computed_field(description="V against the working-ion metal of the competing conversion reaction")
    @property
    def conversion_voltage(self) -> dict[str, float | None]:
        return {ion: r.conversion_voltage for ion, r in self.ions.items()}

    @computed_field(description="conversion gives the higher voltage: the host would convert rather than intercalate")
    @property
    def conversion_preferred(self) -> dict[str, bool | None]:
        return {ion: r.conversion_preferred for ion, r in self.ions.items()}

    @computed_field(description="what a candidate should show: each ion that would convert rather than intercalate")
    @property
    def warnings(self) -> list[str]:
        return [f"{ion}: conversion {r.conversion.reaction} at {r.conversion.voltage:.2f} V beats intercalation at "
                f"{r.conversion.intercalation_voltage:.2f} V" for ion, r in self.ions.items()
                if r.conversion and r.conversion.preferred]

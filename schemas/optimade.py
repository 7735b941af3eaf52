"""The optimade stage's document: one structure as an OPTIMADE structures entry, stored the way
optimade-python-tools' MongoDB backend serves it (`registry serve`), with the registry's own properties under the
provider prefix `_tmo_`.

Every OPTIMADE name is stored as is (`elements`, `cartesian_site_positions`, ..., `_tmo_sets`), so a filter means
the same on the API and in `registry query --collection optimade_structures`. `last_updated` is served as
OPTIMADE's `last_modified`: it moves only when the entry's content changes (builders/stage.py).
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from schemas.stage import StageDoc

PREFIX = "tmo"  # OPTIMADE provider prefix: lowercase, unregistered with the consortium, unique among its providers


def provider_field(name: str, description: str, unit: str | None = None, default: Any = None) -> Any:
    """A registry property served as `_tmo_<name>`; its description and unit go to `/info/structures`."""
    return Field(default, alias=f"_{PREFIX}_{name}", description=description,
                 json_schema_extra={"x-optimade-unit": unit} if unit else None)


class OptimadeStructureDoc(StageDoc):
    """Attributes as optimade's pymatgen adapter makes them (`optimade.adapters.structures.pymatgen`), from the
    relaxed structure when its relaxation succeeded, else the structure as ingested. Properties a stage has not
    computed (or could not) are null: OPTIMADE's `IS UNKNOWN`."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    id: str = Field(description="OPTIMADE id: the registry_id")
    immutable_id: str = Field(description="The registry_id, stable across rebuilds: derived from origin source and id")
    formula_pretty: str
    chemsys: str
    elements: list[str]
    nelements: int
    elements_ratios: list[float]
    chemical_formula_descriptive: str
    chemical_formula_reduced: str
    chemical_formula_anonymous: str
    dimension_types: list[int]
    nperiodic_dimensions: int
    lattice_vectors: list[list[float]]
    cartesian_site_positions: list[list[float]]
    nsites: int
    species_at_sites: list[str]
    species: list[dict[str, Any]]
    structure_features: list[str]

    origin_kind: str = provider_field("origin_kind", "mined (known), generated or dft")
    origin_source: str = provider_field("origin_source", "Reader or generator: cif, csv, mp-api, cdvae, llm, "
                                                         "substitution, ...")
    origin_id: str = provider_field("origin_id", "Identifier within the source: MP id, file stem, run:index")
    relaxed: bool = provider_field("relaxed", "The geometry is the registry's ML relaxation (CHGNet or a MatGL "
                                              "model); false: as ingested", default=False)
    valid: bool | None = provider_field("valid", "Charge-balanced, no atoms closer than 0.5 Å, sane volume; null for "
                                                 "a duplicate of another registry structure (judged as that one)")
    novel: bool | None = provider_field("novel", "No known (mined) structure matches it")
    formation_energy_per_atom: float | None = provider_field(
        "formation_energy_per_atom", "Predicted formation energy of the relaxed structure", "eV/atom")
    e_above_hull: float | None = provider_field(
        "e_above_hull", "Energy above the convex hull of known compounds (see hull_reference_sets)", "eV/atom")
    hull_reference_sets: list[str] = provider_field(
        "hull_reference_sets", "Reference sets of known compounds the hull was built from (name and content hash)",
        default=[])
    band_gap: float | None = provider_field("band_gap", "Predicted band gap of the relaxed structure", "eV")
    has_1d_channel: bool | None = provider_field("has_1d_channel", "Some working ion percolates in one dimension only")
    free_sphere: float | None = provider_field(
        "free_sphere", "Zeo++ largest free sphere Df: the widest sphere that can cross the cell", "Å")
    channel_dimensionality_mg: int | None = provider_field(
        "channel_dimensionality_mg", "Highest dimension in which Mg2+ percolates (BVSE, tunnels stage); 0: none")
    channel_dimensionality_zn: int | None = provider_field(
        "channel_dimensionality_zn", "Highest dimension in which Zn2+ percolates (BVSE, tunnels stage); 0: none")
    channel_dimensionality_ca: int | None = provider_field(
        "channel_dimensionality_ca", "Highest dimension in which Ca2+ percolates (BVSE, tunnels stage); 0: none")
    channel_dimensionality_al: int | None = provider_field(
        "channel_dimensionality_al", "Highest dimension in which Al3+ percolates (BVSE, tunnels stage); 0: none")
    average_voltage_mg: float | None = provider_field(
        "average_voltage_mg", "Average Mg insertion voltage against Mg metal (ML insertion path)", "V")
    average_voltage_zn: float | None = provider_field(
        "average_voltage_zn", "Average Zn insertion voltage against Zn metal (ML insertion path)", "V")
    average_voltage_ca: float | None = provider_field(
        "average_voltage_ca", "Average Ca insertion voltage against Ca metal (ML insertion path)", "V")
    average_voltage_al: float | None = provider_field(
        "average_voltage_al", "Average Al insertion voltage against Al metal (ML insertion path)", "V")
    capacity_grav_mg: float | None = provider_field(
        "capacity_grav_mg", "Gravimetric capacity of the Mg-discharged state", "mAh/g")
    capacity_grav_zn: float | None = provider_field(
        "capacity_grav_zn", "Gravimetric capacity of the Zn-discharged state", "mAh/g")
    capacity_grav_ca: float | None = provider_field(
        "capacity_grav_ca", "Gravimetric capacity of the Ca-discharged state", "mAh/g")
    capacity_grav_al: float | None = provider_field(
        "capacity_grav_al", "Gravimetric capacity of the Al-discharged state", "mAh/g")
    passes: list[str] = provider_field(
        "passes", "Presets whose every hard criterion it passes, as preset:ion (e.g. tunnel:Mg)", default=[])
    sets: list[str] = provider_field("sets", "Candidate sets whose latest version lists it", default=[])

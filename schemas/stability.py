"""The stability stage's document: energy above the convex hull of known compounds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.stage import StageDoc

FAR_BELOW_HULL = 0.2  # eV/atom: an E_hull further below the reference hull than this is flagged


class StabilityDoc(StageDoc):
    formula_pretty: str
    chemsys: str
    formation_energy_per_atom: float = Field(description="eV/atom, from the predict stage")
    energy_source: Literal["relaxed", "refined"] = Field("relaxed", description="Whose energy E_form came from: the "
                                                                                "relaxation's potential or the refine "
                                                                                "stage's (predicted.energy_source)")
    energy_model: str | None = Field(None, description="The potential behind E_form: name [version]")
    e_above_hull: float = Field(description="eV/atom above the hull of known compounds (reference sets + mined "
                                            "structures with reference energies); negative: below it "
                                            "(builders/stability.py, registry.science.hull.ReferenceHull.evaluate)")
    e_above_hull_all: float = Field(description="eV/atom above the hull of known compounds plus every predicted "
                                                "structure of the same chemical system")
    decomposition: dict[str, float] = Field(description="Decomposition products on the reference hull: id -> fraction")
    n_references: int = Field(description="Known compounds (not elements) in this system and its subsystems")
    n_references_same_system: int = Field(description="Known compounds with exactly this chemical system")
    thin_hull: bool = Field(description="The hull has no known compound in this exact system: a low E_hull is then "
                                        "weak evidence of stability")
    reference_sets: list[str] = Field(default_factory=list,
                                      description="Reference sets the hull was built from (name and content hash)")
    energy_schemes: list[str] = Field(default_factory=list,
                                      description="Correction schemes of those sets' formation energies")
    missing_elements: list[str] = Field(default_factory=list,
                                        description="Elements of the system no loaded reference set covers")
    hull_complete: bool = Field(description="A loaded reference set covers every element: E_hull can be trusted as "
                                            "far as the energies can")
    warnings: list[str] = Field(default_factory=list, description="Why this E_hull should not be read as "
                                                                  "confident (incomplete hull, far below the hull)")

"""Known compounds the registry judges against: reference entries by composition and the sets they come from."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class ReferenceEntryDoc(BaseModel):
    """One composition of a reference set (collection `references`), written by `registry references load`."""

    reference_id: str = Field(description="'<reference_set>:<formula_pretty>': unique per set and composition")
    reference_set: str = Field(description="Name of the reference set (collection `reference_sets`)")
    formula_pretty: str = Field(description="Reduced formula, as emmet writes it (pymatgen's reduced_formula)")
    chemsys: str = Field(description="Elements joined by '-', sorted, as in emmet")
    elements: list[str]
    nelements: int
    formation_energy_per_atom: float | None = Field(
        None, description="eV/atom: the lowest entry's formation energy on the registry's MP2020-compatible scale "
                          "(as given + correction_shift; registry.science.references.read_table); None if only band gaps")
    formation_energy_per_atom_as_given: float | None = Field(
        None, description="eV/atom: the lowest entry's formation energy as the set gives it")
    correction_shift: float = Field(0.0, description="eV/atom added to the value as given "
                                                     "(registry.science.references.mp2020_shift)")
    formation_energies_as_given: list[float] = Field(
        default_factory=list, description="eV/atom, every entry (polymorph) of this composition, sorted, as given")
    band_gaps: list[float] = Field(default_factory=list, description="eV, PBE band gaps of its entries, sorted")
    content_hash: str = Field(description="sha256 of the values above: a reload rewrites only what changed")
    last_updated: datetime


class ReferenceSetDoc(BaseModel):
    """A loaded reference set (collection `reference_sets`): origin, licence, energy scale and size."""

    name: str
    description: str
    origin: str
    licence: str
    energy_scheme: str = Field(description="Which correction scheme its formation energies are on, and how")
    uncertainty: str = Field("", description="What is known of its error against the registry's energies")
    files: dict[str, str] = Field(default_factory=dict, description="Files it was read from -> sha256")
    elements_filter: list[str] | None = Field(None, description="Only compositions of these elements were loaded")
    elements: list[str] = Field(description="Every element that occurs in the set: a hull of other elements is "
                                            "flagged incomplete")
    n_compositions: int
    n_formation_energies: int = Field(description="Compositions with a formation energy (the hull's entries)")
    n_entries: int = Field(description="Entries (rows) behind the compositions, polymorphs included")
    n_band_gaps: int
    n_rejected: int = Field(0, description="Rows that could not be read (each in `rejects`)")
    content_hash: str = Field(description="sha256 over its entries: a reload with the same hash changes nothing")
    last_updated: datetime = Field(description="When its entries last changed")

"""A ranked candidate: the values it was judged on and the verdict of every criterion."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.stage import StageDoc


class Verdict(BaseModel):
    name: str
    field: str
    value: Any
    op: str
    threshold: Any
    hard: bool
    weight: float
    passed: bool
    score: float
    note: str | None = None


# the collection a value is copied from -> the builder that computes it
BUILDERS = {"validated": "builders/validate.py", "relaxed": "builders/relax.py", "predicted": "builders/predict.py",
            "stability": "builders/stability.py", "tunnels": "builders/tunnels.py", "dft_comparison": "builders/dft.py",
            "insertion": "builders/insertion.py"}


def _from(stage: str, description: str, default: Any = None) -> Any:
    """A value the rank stage copies from the `stage` collection (json_schema_extra names it: builders/rank.py reads
    the source of every field from here, so a value is declared in one place)."""
    return Field(default, description=f"{description} ({stage}, computed in {BUILDERS[stage]})",
                 json_schema_extra={"stage": stage})


PerIon = dict[str, Any]


class CandidateValues(BaseModel):
    """The values a candidate was judged on, each copied by the rank stage from the stage that computes it. Per-ion
    fields map a working ion to its value; a stage that failed leaves its fields empty and says why in
    `<stage>_error`."""

    model_config = ConfigDict(extra="forbid")

    formula_pretty: str | None = _from("validated", "Reduced formula")
    elements: list[str] | None = _from("validated", "Elements, sorted")
    origin_kind: str | None = _from("validated", "mined, generated or dft")
    novel: bool | None = _from("validated", "No known structure matches it (StructureMatcher, registry/science/validity)")
    unique: bool | None = _from("validated", "First of its group of matching generated structures")
    formula_known: bool | None = _from("validated", "Its reduced formula is in a loaded reference set or mined")
    relaxation_sane: bool | None = _from("relaxed", "The relaxation kept its input's structure (volume within 20%, "
                                                    "still matched; registry/science/relaxation.sanity_warnings)")
    energy_per_atom: float | None = _from("predicted", "eV/atom, MP2020-compatible: the refined energy where the "
                                                       "second tier took it, else the relaxation's")
    energy_source: str | None = _from("predicted", "Which tier `energy_per_atom` comes from")
    formation_energy_per_atom: float | None = _from("predicted", "eV/atom against the reference elemental energies")
    band_gap: float | None = _from("predicted", "eV, the composition band-gap model (registry/science/bandgap.py)")
    converged: bool | None = _from("predicted", "The relaxation met its force criterion")
    e_above_hull: float | None = _from("stability", "eV/atom above the reference hull of its chemical system")
    e_above_hull_all: float | None = _from("stability", "eV/atom above the hull of references and every registry "
                                                        "structure")
    thin_hull: bool | None = _from("stability", "The hull has fewer references than its system needs")
    n_references: int | None = _from("stability", "Compounds on the hull it was judged against")
    hull_complete: bool | None = _from("stability", "A loaded reference set covers every element")
    reference_sets: list[str] | None = _from("stability", "The reference sets of the hull")
    has_1d_channel: bool | None = _from("tunnels", "Some ion percolates in 1-D only (the framework's description)")
    channel_axis: str | None = _from("tunnels", "The lattice direction of that channel")
    free_sphere: float | None = _from("tunnels", "Zeo++ Df (Å) of the framework the working ion sees (its own "
                                                 "element removed): what `admits` judged")
    admits: PerIon | None = _from("tunnels", "ion -> the channel admits it (calibrated free sphere and barrier)")
    dimensionality: PerIon | None = _from("tunnels", "ion -> dimension of its open paths (1: a tunnel)")
    dft_validated: bool | None = _from("dft_comparison", "A DFT result agrees with the ML values")
    average_voltage: PerIon | None = _from("insertion", "ion -> ML average insertion voltage, V vs the metal")
    capacity_grav: PerIon | None = _from("insertion", "ion -> mAh/g of the discharged state")
    max_delta_volume: PerIon | None = _from("insertion", "ion -> largest fractional volume change on insertion")
    conversion_voltage: PerIon | None = _from("insertion", "ion -> voltage of the conversion reaction on the "
                                                           "reference hull")
    conversion_preferred: PerIon | None = _from("insertion", "ion -> conversion gives the higher voltage")
    warnings: list[str] = Field(default_factory=list, description="Every stage's warnings, in chain order")
    validated_error: str | None = _from("validated", "Why that stage failed")
    relaxed_error: str | None = _from("relaxed", "Why that stage failed")
    stability_error: str | None = _from("stability", "Why that stage failed")
    tunnels_error: str | None = _from("tunnels", "Why that stage failed")
    dft_comparison_error: str | None = _from("dft_comparison", "Why that stage failed")
    insertion_error: str | None = _from("insertion", "Why that stage failed")

    @classmethod
    def stage_fields(cls) -> dict[str, list[str]]:
        """stage -> the fields it contributes (the `<stage>_error` fields aside)."""
        out: dict[str, list[str]] = {}
        for name, info in cls.model_fields.items():
            if (extra := info.json_schema_extra) and not name.endswith("_error"):
                out.setdefault(extra["stage"], []).append(name)
        return out


class CandidateDoc(StageDoc):
    candidate_id: str = Field(description="registry_id:preset:ion")
    preset: str
    ion: str
    criteria_hash: str
    formula_pretty: str
    elements: list[str]
    origin_kind: str
    passed: bool = Field(description="All hard criteria passed")
    rank: int | None = Field(None, description="Position among the preset's and ion's candidates, 1 = best (passed "
                                               "first, then by score); written by the rank stage after each run "
                                               "(builders/rank.py): the best N are {'rank': {'$lte': N}}")
    score: float
    criteria: list[Verdict]
    values: CandidateValues = Field(description="The joined stage values the criteria read, each from its stage")

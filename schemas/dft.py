"""DFT validation documents: one per ingested calculation (`dft`) and one per validated structure
(`dft_comparison`), where the registry's ML values meet the DFT ones."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Literal

from emmet.core.types.pymatgen_types.structure_adapter import StructureType
from pydantic import BaseModel, Field

from schemas.stage import StageDoc, State

CalcKind = Literal["relax", "static", "unknown"]


class LinkMethod(str, Enum):
    """How a calculation was tied to a registry structure, strongest first."""

    manifest = "manifest"
    data = "data"
    structure_match = "structure_match"


class DftLink(BaseModel):
    method: LinkMethod | None = Field(None, description="None: the calculation is not linked (see reason)")
    reason: str = Field(description="Why this link, or why none")
    rms: float | None = Field(None, description="StructureMatcher RMS distance of a structure-match link")
    manifest: str | None = Field(None, description="The export manifest that named the structure")


class DftSource(BaseModel):
    path: str = Field(description="Absolute path of the file read")
    kind: Literal["vasprun", "entry", "task"]
    index: int | None = Field(None, description="Position in a JSON file holding several results")
    entry_id: str | None = None
    task_id: str | None = None


class DftDoc(BaseModel):
    """A DFT calculation as read. `failed` ones (unparsable, unconverged, marked failed by their workflow) keep
    the reason and are never used as results; `registry_id` None means no registry structure could be found."""

    dft_id: str = Field(description="Stable id from the source path (and entry id or index): re-ingest is a no-op")
    registry_id: str | None
    state: State
    error: str | None = None
    link: DftLink
    source: DftSource
    formula_pretty: str | None = None
    chemsys: str | None = None
    elements: list[str] = Field(default_factory=list)
    nsites: int | None = None
    functional: str | None = Field(None, description="GGA or GGA+U (from LDAU/hubbards), else the run type")
    run_type: str | None = Field(None, description="As the source reports it (pymatgen's Vasprun.run_type)")
    calc_kind: CalcKind = "unknown"
    hubbards: dict[str, float] = Field(default_factory=dict)
    potcar_symbols: list[str] = Field(default_factory=list)
    converged_electronic: bool | None = None
    converged_ionic: bool | None = None
    energy: float | None = Field(None, description="Uncorrected total energy, eV")
    energy_per_atom: float | None = Field(None, description="Uncorrected, eV/atom")
    corrected_energy_per_atom: float | None = Field(None, description="With the corrections the source applied, "
                                                                      "if any; the comparison re-applies MP2020")
    band_gap: float | None = None
    is_gap_direct: bool | None = None
    structure: StructureType | None = Field(None, description="Final structure of the calculation")
    entry: dict[str, Any] | None = Field(None, description="The ComputedEntry/ComputedStructureEntry as_dict()")
    metadata: dict[str, Any] = Field(default_factory=dict, description="VASP version, INCAR/KPOINTS essentials, steps")
    content_hash: str = Field(description="Hash of everything above: unchanged content keeps last_updated")
    last_updated: datetime


class DftEnergies(BaseModel):
    energy_per_atom_uncorrected: float
    correction_per_atom: float
    energy_per_atom: float = Field(description="MP2020-corrected, eV/atom")
    adjustments: dict[str, float] = Field(description="MP2020 adjustment name -> eV per formula (whole entry)")
    formation_energy_per_atom: float = Field(description="Against the MP elemental references")
    e_above_hull: float = Field(description="Against the same reference hull as the ML stability stage")
    decomposition: dict[str, float]
    band_gap: float | None = None


class MlValues(BaseModel):
    formation_energy_per_atom: float | None = None
    e_above_hull: float | None = None
    band_gap: float | None = None
    potential: str | None = None


class Deltas(BaseModel):
    """ML minus DFT, eV/atom (band gap in eV); None when either side lacks the value."""

    formation_energy_per_atom: float | None = None
    e_above_hull: float | None = None
    band_gap: float | None = None


class KnownPolymorph(BaseModel):
    """The lowest-energy known (mined) compound of the same composition, as the paper compares."""

    registry_id: str
    source_id: str | None = None
    formation_energy_per_atom: float
    dft_minus_known: float = Field(description="DFT formation energy of this structure minus the known one, eV/atom")


class DftComparisonDoc(StageDoc):
    formula_pretty: str | None = None
    chemsys: str | None = None
    dft_id: str | None = Field(None, description="The calculation compared (static preferred, then relax)")
    dft_ids: list[str] = Field(description="Every calculation linked to this structure, used or not")
    functional: str | None = None
    calc_kind: CalcKind | None = None
    dft: DftEnergies | None = None
    ml: MlValues | None = None
    delta: Deltas | None = None
    rmsd: float | None = Field(None, description="StructureMatcher RMS between the ML-relaxed and the DFT-final "
                                                 "structure, after its volume scaling and normalised by (V/n)^(1/3) "
                                                 "(see volume_change); None if they do not match")
    structure_retained: bool | None = Field(None, description="DFT-final structure matches the ML-relaxed one")
    volume_change: float | None = Field(None, description="V_DFT / V_ML - 1")
    dft_validated: bool
    validation: list[str] = Field(description="Why dft_validated is true or false")
    e_hull_threshold: float
    known_polymorph: KnownPolymorph | None = None
    n_references: int | None = None
    thin_hull: bool | None = None
    reference_sets: list[str] = Field(default_factory=list, description="Reference sets of the hull (name, hash)")
    hull_complete: bool | None = Field(None, description="A loaded reference set covers every element")

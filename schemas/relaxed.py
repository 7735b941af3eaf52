"""The relax stage's document: the relaxation's outcome, whatever it was, with the model that made it."""

from __future__ import annotations

from typing import Literal

from emmet.core.types.pymatgen_types.structure_adapter import StructureType
from pydantic import BaseModel, Field

from schemas.stage import StageDoc


class PotentialInfo(BaseModel):
    spec: str = Field(description="What was asked for, e.g. 'chgnet', 'sevenn:7net-0' or 'matgl:<folder>'")
    name: str
    version: str
    device: str
    model_check_max_error: float = Field(description="Largest |error| (eV/atom) on the model-check references")
    checkpoint_sha256: str | None = Field(None, description="sha256 of the weights file the model was loaded from")
    energy_correction: str | None = Field(None, description="What was added to the model's energies to put them on "
                                                            "the MP2020-compatible scale; None: the model predicts "
                                                            "that scale itself (CHGNet)")


class RelaxedDoc(StageDoc):
    """Converged and unconverged relaxations are `successful` documents (with `converged` saying which);
    exploded or failed ones are `failed` with the reason, and keep their input so nothing is lost."""

    formula_pretty: str
    chemsys: str
    elements: list[str]
    nsites: int
    input_structure: StructureType
    structure: StructureType | None = Field(None, description="The relaxed structure")
    status: Literal["converged", "unconverged", "exploded", "failed"]
    converged: bool
    initial_energy_per_atom: float | None = None
    energy_per_atom: float | None = Field(None, description="eV/atom in the potential's (MP2020-compatible) scale")
    steps: int
    max_force: float | None = Field(None, description="eV/Å at the last step (atoms and cell)")
    volume_change: float | None = Field(None, description="Fractional: V_final / V_input - 1")
    rmsd: float | None = Field(None, description="StructureMatcher RMS displacement from the input; None if unmatched")
    warnings: list[str] = Field(default_factory=list,
                                description="Why the result may be another structure than the input's minimum: "
                                            "volume change beyond 20%, or no longer matched to the input")
    relaxation_sane: bool | None = Field(None, description="A result that kept its input's structure (no warning); "
                                                           "None when there is no result (failed, exploded)")
    fmax: float
    max_steps: int
    potential: PotentialInfo

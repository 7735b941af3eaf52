"""The validate stage's document: one per distinct structure (or per invalid structure), with its members."""

from __future__ import annotations

from datetime import datetime

from emmet.core.types.pymatgen_types.structure_adapter import StructureType
from pydantic import BaseModel, Field

from schemas.stage import StageDoc


class ValidityChecks(BaseModel):
    """Each check on its own, so a user sees exactly which one failed."""

    composition_valid: bool = Field(description="SMACT charge neutrality + electronegativity, as CDVAE defines it")
    structure_valid: bool = Field(description="All interatomic distances >= 0.5 Å and volume >= 0.1 Å^3")
    volume_per_atom: float | None
    volume_ok: bool
    uncovered_elements: list[str] = Field(default_factory=list, description="Elements the models in use lack")


class Member(BaseModel):
    registry_id: str
    kind: str
    source: str
    run_id: str | None = None


class ValidatedDoc(StageDoc):
    """`registry_id` is the representative member's (a mined member if there is one)."""

    formula_pretty: str
    chemsys: str
    elements: list[str]
    nsites: int
    structure: StructureType
    valid: bool
    reasons: list[str] = Field(default_factory=list)
    checks: ValidityChecks
    members: list[str] = Field(description="registry_ids of all structures that match this one")
    member_origins: list[Member]
    origin_kind: str = Field(description="Origin kind of the representative")
    novel: bool = Field(description="No mined (known) structure matches it")
    unique: bool = Field(description="No generation run produced it more than once")
    formula_known: bool = Field(False, description="A loaded reference set (MP's compositions) or a mined structure "
                                                   "has its reduced formula, whatever its structure (the paper drops "
                                                   "such formulas); builders/validate.py")
    structure_updated: datetime = Field(description="last_updated of the representative structure: relax keys on it")

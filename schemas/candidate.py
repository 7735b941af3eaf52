"""A ranked candidate: the values it was judged on and the verdict of every criterion."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

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




class CandidateDoc(StageDoc):
    candidate_id: str = Field(description="registry_id:preset:ion")
    preset: str
    ion: str
    criteria_hash: str
    formula_pretty: str
    elements: list[str]
    origin_kind: str
    passed: bool = Field(description="All hard criteria passed")
    score: float
    criteria: list[Verdict]
    values: dict[str, Any] = Field(description="The joined stage values the criteria read")

"""A generation run: what was asked of a generator and what came out, so a run can be judged and redone."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field


class GenerationRunDoc(BaseModel):
    run_id: str
    generator: str
    version: str
    parameters: dict[str, Any]
    produced: int = Field(description="Samples the generator yielded (parsed or not)")
    parsed: int = Field(description="Samples that became structure documents (new, updated or unchanged)")
    rejected: int
    reject_reasons: dict[str, int] = Field(default_factory=dict)
    filtered: int = Field(0, description="Parsed samples dropped by the user's filters (not rejects)")
    metrics: dict[str, Any] = Field(default_factory=dict, description="e.g. CDVAE validity fractions")
    seconds: float
    started: datetime
    last_updated: datetime = Field(default_factory=lambda: datetime.now(UTC))

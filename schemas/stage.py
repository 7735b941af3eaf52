"""What every build-stage document carries: its key, its state, why it failed, and how it was made."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field

from registry import __version__


class State(str, Enum):
    successful = "successful"
    failed = "failed"


class Provenance(BaseModel):
    """Enough to redo a value: which builder, which model and version, which parameters, when."""

    builder: str
    registry_version: str = __version__
    model: str | None = None
    model_version: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    built_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class StageDoc(BaseModel):
    """Base of the documents builders write. `last_updated` is the source's timestamp (maggma's convention),
    so a builder knows a document is stale when its source is newer."""

    registry_id: str
    state: State = State.successful
    error: str | None = Field(None, description="Why this document could not be processed (state failed)")
    last_updated: datetime
    provenance: Provenance

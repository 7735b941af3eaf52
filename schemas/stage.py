"""What every build-stage document carries: its key, its state, why it failed, how it was made, and the
timestamps of the one staleness rule (builders/stage.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def _registry_version() -> str:
    try:
        return version("tmo-registry")
    except PackageNotFoundError:  # a source checkout run without installing
        return "unknown"


REGISTRY_VERSION = _registry_version()


class State(str, Enum):
    successful = "successful"
    failed = "failed"


class Provenance(BaseModel):
    """Enough to redo a value: which builder, which model and version, which parameters, when."""

    builder: str
    registry_version: str = REGISTRY_VERSION
    model: str | None = None
    model_version: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    built_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class StageDoc(BaseModel):
    """The envelope of every document a stage writes, and all a failed one holds.

    A failed document (`state: failed`) is this envelope alone, with the reason in `error`; a successful one is
    the stage's own schema. `parse_stage_doc` validates either way."""

    model_config = ConfigDict(extra="allow")

    registry_id: str
    state: State = State.successful
    error: str | None = Field(None, description="Why this document could not be processed (state failed)")
    formula_pretty: str | None = Field(None, description="Reduced formula of the structure, as emmet writes it")
    chemsys: str | None = Field(None, description="Elements joined by '-', sorted")
    last_updated: datetime = Field(default_factory=lambda: datetime.now(UTC),
                                   description="When this document's content last changed (set by the stage's "
                                               "writer: an unchanged rebuild keeps it, so nothing downstream redoes)")
    sources_updated: datetime | None = Field(None, description="The newest last_updated among the inputs it was "
                                                               "built from: it is out of date when an input is newer")
    parameters_hash: str | None = Field(None, description="Hash of the stage parameters that shape its content")
    content_hash: str | None = Field(None, description="Hash of its content, timestamps aside")
    provenance: Provenance


def parse_stage_doc(schema: type[StageDoc], doc: dict[str, Any]) -> StageDoc:
    """A stored document as its stage's schema, or as the envelope when it failed."""
    body = {k: v for k, v in doc.items() if k != "_id"}
    return (StageDoc if body.get("state") == State.failed.value else schema).model_validate(body)

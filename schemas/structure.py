"""The structure document: one per structure that enters the registry, mined or generated."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import numpy as np
from emmet.core.structure import StructureMetadata
from emmet.core.types.pymatgen_types.structure_adapter import StructureType
from pydantic import BaseModel, Field, field_validator
from pymatgen.core import Structure


class OriginKind(str, Enum):
    """Where a structure came from; known (mined) structures decide novelty of generated ones."""

    mined = "mined"
    generated = "generated"
    dft = "dft"


class Origin(BaseModel):
    """Provenance of a structure: enough to find the raw record again and to redo its generation."""

    kind: OriginKind
    source: str = Field(description="Reader or generator: mp-api, csv, cif, json, cdvae, llm, substitution, bundle")
    source_id: str = Field(description="Identifier unique within the source (MP id, file stem, run:index)")
    file: str | None = None
    row: int | None = None
    generator: str | None = Field(None, description="Generator or model name, e.g. 'cdvae' or a model folder")
    version: str | None = Field(None, description="Generator or model version")
    run_id: str | None = Field(None, description="Generation run that produced this structure")
    parameters: dict[str, Any] = Field(default_factory=dict)

    def registry_id(self) -> str:
        """A stable id from (source, source_id): re-reading the same record always yields the same id."""
        digest = hashlib.sha256(f"{self.source}\x1f{self.source_id}".encode()).hexdigest()
        return f"reg-{digest[:16]}"


def _finite(value: Any) -> Any:
    """NaN/inf cannot round-trip through BSON comparisons sensibly: store them as missing."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class StructureDoc(StructureMetadata):
    """A structure in the registry with emmet-core's metadata, its origin and the properties it came with."""

    registry_id: str
    structure: StructureType
    origin: Origin
    reference: dict[str, Any] = Field(
        default_factory=dict,
        description="Properties that came with the source (e.g. MP formation_energy_per_atom); never predictions",
    )
    content_hash: str = Field(description="Hash of structure, origin and reference: a change means an update")
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    last_updated: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("reference")
    @classmethod
    def _drop_non_finite(cls, reference: dict[str, Any]) -> dict[str, Any]:
        return {k: _finite(v) for k, v in reference.items()}

    @classmethod
    def model_validate_reference(cls, reference: dict[str, Any] | None) -> dict[str, Any]:
        """A record's reference values as this schema stores them (non-finite numbers as missing)."""
        return cls._drop_non_finite(dict(reference or {}))

    @classmethod
    def from_structure(  # type: ignore[override]
        cls, structure: Structure, origin: Origin, reference: dict[str, Any] | None = None, **kwargs: Any
    ) -> StructureDoc:
        reference = cls.model_validate_reference(reference)
        return super().from_structure(
            structure, registry_id=origin.registry_id(), structure=structure, origin=origin, reference=reference,
            content_hash=content_hash(structure_hash(structure), origin, reference), **kwargs)


def structure_hash(structure: Structure) -> str:
    """Hash of a structure's lattice, species and fractional coordinates (rounded to 1e-6): equal for the same
    structure read twice, so what is derived from the structure alone is computed once."""
    digest = hashlib.sha256()
    digest.update(np.round(structure.lattice.matrix, 6).astype(np.float64).tobytes())
    digest.update(np.round(structure.frac_coords, 6).astype(np.float64).tobytes())
    digest.update("\x1f".join(site.species_string for site in structure).encode())
    return digest.hexdigest()


def content_hash(structure_digest: str, origin: Origin, reference: dict[str, Any]) -> str:
    """Hash what defines a record's content (the structure's hash, origin, reference), so a re-read that changes
    nothing is a no-op."""
    payload = {"structure": structure_digest, "origin": origin.model_dump(mode="json"), "reference": reference}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class RejectDoc(BaseModel):
    """Why an input record did not become a document: kept so nothing is silently lost."""

    reject_id: str
    stage: str = Field("ingest", description="ingest, or the generator that produced the record")
    source: str
    source_id: str | None = None
    file: str | None = None
    row: int | None = None
    reason: str
    raw: str | None = Field(None, description="The first characters of the raw record")
    last_updated: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def make(cls, *, stage: str, source: str, reason: str, source_id: str | None = None, file: str | None = None,
             row: int | None = None, raw: str | None = None) -> RejectDoc:
        """The id depends on which record and why, so re-reading the same bad record updates one reject."""
        key = f"{stage}\x1f{source}\x1f{source_id}\x1f{file}\x1f{row}\x1f{reason}"
        return cls(
            reject_id="rej-" + hashlib.sha256(key.encode()).hexdigest()[:16],
            stage=stage, source=source, source_id=source_id, file=file, row=row, reason=reason,
            raw=raw[:500] if raw else None,
        )

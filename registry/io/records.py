"""The unit that readers and generators hand to the registry: a parsed structure, or the reason there is none."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymatgen.core import Structure

from schemas.structure import Origin


@dataclass
class Record:
    """One input record. `structure is None` means rejected, and `reason` says why."""

    origin: Origin
    structure: Structure | None = None
    reference: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    raw: str | None = None

    @classmethod
    def reject(cls, origin: Origin, reason: str, raw: str | None = None) -> Record:
        return cls(origin=origin, reason=reason, raw=raw)

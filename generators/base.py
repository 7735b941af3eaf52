"""The one interface every generator implements, so the registry can store any of them the same way."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

from registry.io.records import Record


class Generator(ABC):
    """Yields `Record`s with `origin.kind == "generated"`; the registry writes them and a `generation_runs` doc.

    A run is identified by the generator, its version and its parameters (which include a seed and any input
    file's checksum), so repeating the same run rewrites the same documents instead of adding new ones.
    """

    name: ClassVar[str]
    version: ClassVar[str]

    @abstractmethod
    def parameters(self) -> dict[str, Any]:
        """Everything needed to redo the run (JSON-serialisable)."""

    @abstractmethod
    def generate(self, run_id: str) -> Iterator[Record]:
        """Yield every produced sample, parsed or rejected, in a deterministic order."""

    def run_id(self) -> str:
        payload = json.dumps([self.name, self.version, self.parameters()], sort_keys=True, default=str)
        return f"{self.name}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"

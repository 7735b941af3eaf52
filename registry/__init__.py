"""A MongoDB-backed registry for discovering open-tunnel transition-metal oxides."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["DATA", "Registry", "__version__"]
DATA = Path(__file__).parent / "data"  # what the registry ships: references, models, frameworks, the sample

# pymatgen warns for each noble gas whenever formulas are ordered by electronegativity: noise in every command's
# output (and every worker's: they import this package too), never a problem for an oxide registry
warnings.filterwarnings("ignore", message="No Pauling electronegativity", category=UserWarning)

if TYPE_CHECKING:
    from registry.db.client import Registry


def __getattr__(name: str) -> Any:
    """`from registry import Registry` without importing the science stack for every submodule import."""
    if name == "Registry":
        from registry.db.client import Registry

        return Registry
    raise AttributeError(name)

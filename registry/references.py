"""Materials Project elemental reference energies: the zero of every formation energy in the registry."""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path

from pymatgen.core import Composition
from pymatgen.entries.computed_entries import ComputedEntry

ELEMENTAL_REFERENCES = Path(__file__).parent / "data" / "references" / "2023-02-07-mp-elemental-reference-entries.json.gz"
REFERENCE_NAME = "MP elemental references 2023-02-07 (Matbench Discovery)"


@cache
def elemental_entries() -> dict[str, ComputedEntry]:
    """Symbol -> MP's lowest-energy elemental entry (energy per atom MP2020-compatible)."""
    with gzip.open(ELEMENTAL_REFERENCES, "rt") as fh:
        data = json.load(fh)
    return {symbol: ComputedEntry.from_dict(d) for symbol, d in data.items()}


def elemental_energy(symbol: str) -> float:
    """Energy per atom of an element's reference; KeyError names the missing element."""
    entries = elemental_entries()
    if symbol not in entries:
        raise KeyError(f"no MP elemental reference energy for {symbol}")
    return entries[symbol].energy_per_atom


def formation_energy_per_atom(composition: Composition, energy_per_atom: float) -> float:
    """E_form = E - sum_i x_i mu_i, with x_i atomic fractions and mu_i the elemental reference energies."""
    fractions = composition.fractional_composition
    return energy_per_atom - sum(x * elemental_energy(el.symbol) for el, x in fractions.items())

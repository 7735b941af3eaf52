"""Validity as CDVAE defines it (Xie et al. 2022), shared by ingest, the validate builder and generator metrics.

Composition validity: SMACT charge neutrality with the Pauling electronegativity test, pure elements and
all-metal alloys counted valid, using SMACT's original ("smact14") oxidation states as CDVAE did.
Structure validity: every interatomic distance >= 0.5 Å and a cell volume >= 0.1 Å^3.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
from pymatgen.core import Composition, Structure
from smact.screening import smact_validity

# SMACT warns once per noble gas that it has no Pauling electronegativity; the test then fails those, as CDVAE's did.
warnings.filterwarnings("ignore", message="No Pauling electronegativity", category=UserWarning)

MIN_DISTANCE = 0.5  # Å, CDVAE's cutoff
MIN_VOLUME = 0.1  # Å^3, CDVAE's cutoff
MAX_SITES = 1000  # larger cells are refused before any O(N^2) work: this registry holds crystals, not slabs
MAX_LENGTH = 100.0  # Å; pymatgen's neighbour search grids the cell in r-sized cubes: a 500 Å cell takes 4 GB


@lru_cache(maxsize=65536)
def _composition_valid(formula: str) -> bool:
    return bool(smact_validity(Composition(formula), use_pauling_test=True, include_alloys=True,
                               oxidation_states_set="smact14"))


def composition_validity(composition: Composition) -> bool:
    """CDVAE's SMACT validity; cached by reduced formula because generated runs repeat compositions."""
    if any(not el.is_valid_symbol(el.symbol) or el.Z > 103 for el in composition.elements):
        return False
    return _composition_valid(composition.reduced_formula)


def structure_problem(structure: Structure, max_sites: int = MAX_SITES) -> str | None:
    """The reason a structure is unphysical, or None. Cheap checks first so hostile input fails fast."""
    n = len(structure)
    if n == 0:
        return "structure has no sites"
    if n > max_sites:
        return f"structure has {n} sites, more than the limit of {max_sites}"
    lattice = structure.lattice.matrix
    if not np.all(np.isfinite(lattice)) or not np.all(np.isfinite(structure.frac_coords)):
        return "lattice or coordinates contain NaN or infinity"
    if not structure.is_ordered:
        return "structure is disordered (partial occupancies); the registry holds ordered crystals"
    volume = structure.volume
    if not np.isfinite(volume) or volume < MIN_VOLUME:
        return f"cell volume {volume:.3g} Å^3 is below {MIN_VOLUME} Å^3"
    if max(structure.lattice.abc) > MAX_LENGTH:
        return f"a lattice vector is longer than {MAX_LENGTH:g} Å: not a crystal cell this registry holds"
    if min(structure.lattice.abc) < MIN_DISTANCE:
        return f"a lattice vector is shorter than {MIN_DISTANCE} Å: every atom is that close to its own image"
    centers, _, _, distances = structure.get_neighbor_list(r=MIN_DISTANCE)
    if len(centers):
        i = int(np.argmin(distances))
        return (f"atoms closer than {MIN_DISTANCE} Å: {distances[i]:.3f} Å between site {int(centers[i])} "
                f"({structure[int(centers[i])].species_string}) and a neighbour")
    return None


def structure_validity(structure: Structure) -> bool:
    """CDVAE's structure validity."""
    return structure_problem(structure) is None

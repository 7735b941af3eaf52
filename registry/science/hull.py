"""Convex hulls in formation-energy space: known compounds (reference-set entries and mined structures with
reference formation energies, `registry.db.known`) plus the MP elemental references at zero. One place builds them,
so the ML stability stage, the screen, insertion and the DFT comparison judge against the same hull."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition

from registry.db.stores import among
from registry.science.references import elemental_entries

# Known compounds: mined structures that came with a formation energy (e.g. MP's).
REFERENCE_QUERY = {"origin.kind": "mined", "reference.formation_energy_per_atom": {"$type": "number"}}


def reference_query(systems: str | Iterable[str]) -> dict[str, Any]:
    """The known compounds of one chemical system and its subsystems (a str), or of exactly the given systems.

    The selective `chemsys` comes first (`among`): with `origin.kind` first the embedded server read every mined
    compound, 0.25 s against 5 ms per hull at 2,111 structures, which was most of the screen stage's time.
    """
    return among("chemsys", subsystems(systems) if isinstance(systems, str) else sorted(systems), REFERENCE_QUERY)


def subsystems(chemsys: str) -> list[str]:
    """Every chemical system inside `chemsys` ("Mn-O" -> ["Mn", "O", "Mn-O"]), as stored in documents."""
    elements = sorted(chemsys.split("-"))
    return ["-".join(c) for n in range(1, len(elements) + 1) for c in combinations(elements, n)]


def reference_entry(formula: str, formation_energy_per_atom: float, entry_id: str) -> PDEntry:
    comp = Composition(formula)
    return PDEntry(comp, formation_energy_per_atom * comp.num_atoms, name=entry_id, attribute=entry_id)


@dataclass(frozen=True)
class HullBasis:
    """What a hull's known compounds came from: the reference sets loaded, the elements they cover, and the energy
    schemes of their formation energies. A hull of elements no set covers is incomplete."""

    reference_sets: tuple[str, ...] = ()
    covered: frozenset[str] = frozenset()
    energy_schemes: tuple[str, ...] = ()


@dataclass
class HullResult:
    e_above_hull: float
    decomposition: dict[str, float]  # entry id or formula -> fraction
    n_references: int
    missing_elements: list[str]  # elements of the system no loaded reference set covers: the hull is incomplete


class ReferenceHull:
    """The hull of one chemical system from reference entries (formation energies per formula in eV)."""

    def __init__(self, chemsys: str, references: Sequence[PDEntry], basis: HullBasis | None = None):
        self.chemsys = chemsys
        self.elements = sorted(chemsys.split("-"))
        self.basis = basis or HullBasis()
        self.missing_elements = [e for e in self.elements if e not in self.basis.covered]
        missing = [e for e in self.elements if e not in elemental_entries()]
        if missing:
            raise ValueError(f"no elemental reference for {', '.join(missing)}: cannot build the {chemsys} hull")
        self.references = [r for r in references if {e.symbol for e in r.composition.elements} <= set(self.elements)
                           and r.composition.is_element is False]
        self._corners = [PDEntry(Composition(e), 0.0, name=e, attribute=f"{e} (MP elemental reference)")
                         for e in self.elements]
        self.diagram = PhaseDiagram(self._corners + list(self.references))

    @property
    def complete(self) -> bool:
        """A loaded reference set covers every element of the system."""
        return bool(self.basis.reference_sets) and not self.missing_elements

    @property
    def n_references(self) -> int:
        """Known compounds (not elements) in this system and its subsystems."""
        return len(self.references)

    def evaluate(self, formula: str, formation_energy_per_atom: float) -> HullResult:
        """Energy above the reference hull (negative: below it) and the decomposition products."""
        entry = reference_entry(formula, formation_energy_per_atom, "candidate")
        decomposition, e_hull = self.diagram.get_decomp_and_e_above_hull(entry, allow_negative=True)
        return HullResult(e_above_hull=float(e_hull), n_references=self.n_references,
                          decomposition={_label(e): float(f) for e, f in decomposition.items()},
                          missing_elements=self.missing_elements)

    def with_entries(self, entries: Iterable[PDEntry]) -> PhaseDiagram:
        """The hull of the references plus `entries` (e.g. every predicted structure of the system), on which
        each of those entries has E_hull >= 0."""
        return PhaseDiagram(self._corners + self.references + list(entries))


def _label(entry: PDEntry) -> str:
    attr: Any = entry.attribute
    return str(attr) if attr else entry.composition.reduced_formula

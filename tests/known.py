"""Known compounds for tests: a small cut of the shipped MP reference set."""

from __future__ import annotations

from registry.db.client import Registry
from registry.db.known import load_reference_set
from registry.science.references import read_table, shipped_set


def load_references(reg: Registry, elements: tuple[str, ...] = ("Mg", "Mn", "O")) -> None:
    """The shipped MP reference set cut to `elements`: what a build judges hulls and known formulas against, in
    a fraction of a second (the whole set takes about a minute to write; a build with none loads it)."""
    load_reference_set(reg, shipped_set(), read_table(elements=elements), elements)

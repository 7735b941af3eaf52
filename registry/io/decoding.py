"""Decoding pymatgen objects from untrusted JSON without running code from it.

monty's `MontyDecoder` (and pymatgen's `from_dict` methods, which call it on site properties and entry data)
imports whatever module an `"@module"` key names, at any depth, and calls the named class's `from_dict`: a file
naming an installed module runs that module's import-time code, and some pymatgen classes open files named in the
JSON (`Vasprun` with `filename: /etc/shadow`, or a FIFO that hangs the reader). Every such key is checked first:
only the classes the registry reads, structures and entries and their parts, are decoded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from monty.json import MontyDecoder

_ENTRIES = ("ComputedEntry", "ComputedStructureEntry", "EnergyAdjustment", "ConstantEnergyAdjustment",
            "ManualEnergyAdjustment", "CompositionEnergyAdjustment", "TemperatureEnergyAdjustment")
_PARTS = {"pymatgen.core.structure": ("Structure", "IStructure"), "pymatgen.core.lattice": ("Lattice",),
          "pymatgen.core.sites": ("Site", "PeriodicSite"), "pymatgen.core.composition": ("Composition",),
          "pymatgen.core.periodic_table": ("Element", "Species", "DummySpecies"),
          "pymatgen.core.entries": _ENTRIES, "pymatgen.entries.computed_entries": _ENTRIES,  # newer, older pymatgen
          "numpy": ("array",)}
ALLOWED = frozenset((module, name) for module, names in _PARTS.items() for name in names)


class UntrustedModule(ValueError):
    """The JSON names a module outside the trusted packages."""


def class_references(obj: Any) -> Iterator[tuple[str, str]]:
    """Every `("@module", "@class")` pair in a JSON tree."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "@module" in item:
                yield str(item["@module"]), str(item.get("@class"))
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def check_modules(obj: Any, trusted: tuple[str, ...] | None = None) -> None:
    """Raise `UntrustedModule` when a class named in `obj` is not one the registry reads (`ALLOWED`), or, given
    `trusted` (module name prefixes, e.g. a model's own package), lies outside them."""
    if trusted is None:
        foreign = sorted({f"{m}.{c}" for m, c in class_references(obj) if (m, c) not in ALLOWED})
        what = "structures, entries and their parts"
    else:
        foreign = sorted({m for m, _ in class_references(obj) if not m.startswith(trusted)})
        what = ", ".join(trusted)
    if foreign:
        raise UntrustedModule(f"names class(es) outside {what}: {', '.join(foreign[:3])}; decoding would import "
                              "or run them, so it is refused")


def decode(obj: Any) -> Any:
    """`MontyDecoder().process_decoded(obj)` once every class it would build is one the registry reads."""
    check_modules(obj)
    return MontyDecoder().process_decoded(obj)

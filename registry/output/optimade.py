"""The registry in OPTIMADE's terms: which geometry a structure is shown with, its structure attributes (optimade's
own pymatgen adapter, so they are what every OPTIMADE client expects), and the provider that owns the `_tmo_`
properties. Shared by the optimade stage (what `registry serve` serves) and `sets export --format optimade`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymatgen.core import Structure

from registry import __version__
from schemas.optimade import PREFIX

PROVIDER_NAME = "tmo-registry"
DESCRIPTION = ("Open-tunnel transition-metal oxides as hosts for multivalent-ion batteries (Mg, Zn, Ca, Al): mined "
               "and generated structures with ML-relaxed geometries, energies, channels and insertion voltages")


def provider(description: str = DESCRIPTION) -> dict[str, str]:
    """The provider block of every response (optimade.models.Provider's fields)."""
    return {"name": PROVIDER_NAME, "prefix": PREFIX, "description": f"{description} (tmo-registry {__version__})"}


def geometry(relaxed: Mapping[str, Any] | None, *inputs: Mapping[str, Any] | None) -> tuple[Structure, bool] | None:
    """The relaxed structure when its relaxation succeeded (True), else the first input document's (False):
    None when no document has one."""
    if relaxed and relaxed.get("state") == "successful" and relaxed.get("structure"):
        return Structure.from_dict(relaxed["structure"]), True
    for doc in inputs:
        if doc and doc.get("structure"):
            return Structure.from_dict(doc["structure"]), False
    return None


def structure_attributes(structure: Structure, registry_id: str) -> dict[str, Any]:
    """OPTIMADE structure attributes (species, sites, lattice, formulas, dimension types, ...) with the registry id
    as immutable id; what the adapter leaves unknown (last_modified among them) is left out."""
    from optimade.adapters.structures.pymatgen import from_pymatgen

    return {**from_pymatgen(structure).model_dump(exclude_none=True), "immutable_id": registry_id}

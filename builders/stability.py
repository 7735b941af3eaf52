"""stability: predicted + known compounds -> stability. Energy above the reference hull, per chemical system.

A chemical system is rebuilt (builders/stage.py's rule) when one of its predicted structures changed (a new one
moves the hull for the others: `e_above_hull_all`) or when anything its hull is built from changed (a reference
set loaded again with new content, a mined compound of the system or a subsystem: `KnownCompounds.updated`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from maggma.core import Store

from builders.stage import StageBuilder
from registry.db.known import KnownCompounds
from registry.science.hull import ReferenceHull, reference_entry
from schemas.base import to_mongo
from schemas.stability import FAR_BELOW_HULL, StabilityDoc
from schemas.stage import Provenance, State


class StabilityBuilder(StageBuilder):
    stage = "stability"
    group_field = "chemsys"
    members_field = "registry_id"
    dependency_field = "chemsys"

    def __init__(self, predicted: Store, references: Store, reference_sets: Store, structures: Store,
                 stability: Store, query: dict | None = None, **kwargs: Any):
        """`references`, `reference_sets` and `structures` supply the known compounds (`registry.db.known`)."""
        self.predicted = predicted
        self.references = references
        self.reference_sets = reference_sets
        self.structures = structures
        self.stability = stability
        self.known = KnownCompounds(references, reference_sets, structures)
        scope = {"state": State.successful.value, "formation_energy_per_atom": {"$type": "number"}, **(query or {})}
        super().__init__(predicted, stability, query=scope, reads=[references, reference_sets, structures],
                         projection=["registry_id", "formula_pretty", "chemsys", "formation_energy_per_atom",
                                     "energy_source", "predictions.formation_energy_per_atom"], **kwargs)

    def dependency_time(self, chemsys: str) -> datetime | None:
        return self.known.updated(chemsys)

    def process_group(self, item: dict) -> list[dict]:
        chemsys, docs = item["group"], item["docs"]
        hull = self.known.hull(chemsys)
        predicted = [reference_entry(d["formula_pretty"], d["formation_energy_per_atom"], d["registry_id"])
                     for d in docs]
        combined = hull.with_entries(predicted)
        same_system = sum(1 for e in hull.references if e.composition.chemical_system == chemsys)
        provenance = Provenance(builder="stability", parameters={"reference_sets": list(hull.basis.reference_sets)})
        out = []
        for d, entry in zip(docs, predicted, strict=True):
            try:
                ref = hull.evaluate(d["formula_pretty"], d["formation_energy_per_atom"])
                e_hull_all = float(combined.get_e_above_hull(entry))
            except Exception as exc:
                out.append(self.failed(d, f"hull evaluation failed: {exc}"))
                continue
            out.append(to_mongo(StabilityDoc(
                registry_id=d["registry_id"], provenance=provenance,
                formula_pretty=d["formula_pretty"], chemsys=chemsys,
                formation_energy_per_atom=d["formation_energy_per_atom"], energy_source=d.get("energy_source", "relaxed"),
                energy_model=_model(d), e_above_hull=ref.e_above_hull,
                e_above_hull_all=e_hull_all, decomposition=ref.decomposition, n_references=hull.n_references,
                n_references_same_system=same_system, thin_hull=same_system == 0,
                reference_sets=list(hull.basis.reference_sets), energy_schemes=list(hull.basis.energy_schemes),
                missing_elements=ref.missing_elements, hull_complete=hull.complete,
                warnings=_warnings(hull, ref.e_above_hull),
            )))
        return out


def _model(predicted: dict) -> str | None:
    """The potential behind a predicted E_form, as "name [version]"."""
    made = (predicted.get("predictions") or {}).get("formation_energy_per_atom")
    return f"{made['model']} [{made['version']}]" if made else None


def _warnings(hull: ReferenceHull, e_above_hull: float) -> list[str]:
    """Why an E_hull should not be read as confident."""
    warnings = []
    if not hull.basis.reference_sets:
        warnings.append("incomplete hull: no reference set loaded (registry references load)")
    elif hull.missing_elements:
        warnings.append(f"incomplete hull: no loaded reference set covers {', '.join(hull.missing_elements)}")
    if e_above_hull < -FAR_BELOW_HULL:
        warnings.append(f"{-e_above_hull:.2f} eV/atom below the reference hull: a new ground state this far down is "
                     "more often a model or structure error than a discovery")
    return warnings

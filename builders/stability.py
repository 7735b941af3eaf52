"""stability: predicted + mined references -> stability. Energy above hull per chemical system.

A chemical system is rebuilt when one of its predicted structures changed (a new one moves the hull for the
others: `e_above_hull_all`) or when a known compound of the system or a subsystem changed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from maggma.core import Store

from builders.group import GroupStageBuilder, _naive
from registry.hull import REFERENCE_QUERY, ReferenceHull, reference_entry, reference_query, subsystems
from registry.references import REFERENCE_NAME
from schemas.base import to_mongo
from schemas.stability import StabilityDoc
from schemas.stage import Provenance, State


class StabilityBuilder(GroupStageBuilder):
    group_field = "chemsys"
    members_field = "registry_id"

    def __init__(self, predicted: Store, structures: Store, stability: Store, query: dict | None = None,
                 **kwargs: Any):
        """`structures` supplies the known compounds (mined, with a reference formation energy)."""
        self.predicted = predicted
        self.structures = structures
        self.stability = stability
        scope = {"state": State.successful.value, "formation_energy_per_atom": {"$type": "number"}, **(query or {})}
        super().__init__(predicted, stability, query=scope, extra_sources=[structures], **kwargs)

    def _reference_times(self) -> dict[str, datetime]:
        """Newest change of the known compounds, per chemical system."""
        pipeline = [{"$match": REFERENCE_QUERY}, {"$group": {"_id": "$chemsys", "lu": {"$max": "$last_updated"}}}]
        return {g["_id"]: g["lu"] for g in self.structures._collection.aggregate(pipeline)}

    def stale_groups(self) -> list[str]:
        stale = set(super().stale_groups())
        if self.force:
            return sorted(stale)
        reference_times = self._reference_times()
        built = {}
        for d in self.stability.query(criteria={}, properties=["chemsys", "references_updated"]):
            built[d["chemsys"]] = d.get("references_updated")
        for chemsys, recorded in built.items():
            newest = max((reference_times[s] for s in subsystems(chemsys) if s in reference_times), default=None)
            if newest is not None and (recorded is None or _naive(newest) > _naive(recorded)):
                stale.add(chemsys)
        return sorted(stale)

    def group_context(self, group: str, docs: list[dict]) -> dict[str, Any]:
        refs = list(self.structures.query(
            criteria=reference_query(group),
            properties=["registry_id", "formula_pretty", "chemsys", "reference.formation_energy_per_atom",
                        "origin.source_id", "last_updated"]))
        return {"references": refs}

    def process_group(self, item: dict) -> list[dict]:
        chemsys, docs, refs = item["group"], item["docs"], item["references"]
        sources_updated = max(d["last_updated"] for d in docs)
        references_updated = max((r["last_updated"] for r in refs), default=None)
        try:
            hull = ReferenceHull(chemsys, [reference_entry(r["formula_pretty"],
                                                           r["reference"]["formation_energy_per_atom"],
                                                           r["origin"]["source_id"]) for r in refs])
        except Exception as exc:  # no elemental reference, or a degenerate diagram
            return [self._failed(d, f"cannot build the {chemsys} hull: {exc}", sources_updated) for d in docs]
        predicted = [reference_entry(d["formula_pretty"], d["formation_energy_per_atom"], d["registry_id"])
                     for d in docs]
        try:
            combined = hull.with_entries(predicted)
        except Exception as exc:
            return [self._failed(d, f"cannot build the {chemsys} hull with predictions: {exc}", sources_updated)
                    for d in docs]
        same_system = sum(1 for r in refs if r["chemsys"] == chemsys)
        provenance = Provenance(builder="stability", parameters={"references": REFERENCE_NAME,
                                                                 "reference_query": str(REFERENCE_QUERY)})
        out = []
        for d, entry in zip(docs, predicted, strict=True):
            try:
                ref = hull.evaluate(d["formula_pretty"], d["formation_energy_per_atom"])
                e_hull_all = float(combined.get_e_above_hull(entry))
            except Exception as exc:
                out.append(self._failed(d, f"hull evaluation failed: {exc}", sources_updated))
                continue
            out.append(to_mongo(StabilityDoc(
                registry_id=d["registry_id"], last_updated=d["last_updated"], provenance=provenance,
                formula_pretty=d["formula_pretty"], chemsys=chemsys,
                formation_energy_per_atom=d["formation_energy_per_atom"], e_above_hull=ref.e_above_hull,
                e_above_hull_all=e_hull_all, decomposition=ref.decomposition, n_references=hull.n_references,
                n_references_same_system=same_system, thin_hull=same_system == 0,
                reference_source="mined structures' reference formation energies + " + REFERENCE_NAME,
                sources_updated=sources_updated, references_updated=references_updated,
            )))
        return out

    @staticmethod
    def _failed(doc: dict, reason: str, sources_updated: datetime) -> dict:
        return {"registry_id": doc["registry_id"], "chemsys": doc["chemsys"], "state": State.failed.value,
                "error": reason, "last_updated": doc["last_updated"], "sources_updated": sources_updated,
                "provenance": {"builder": "stability", "built_at": datetime.now(UTC)}}

"""optimade: structures + every stage's document + candidate sets -> optimade_structures, the OPTIMADE view that
`registry serve` serves.

One document per structure (schemas/optimade.py): OPTIMADE structure attributes of its served geometry (relaxed
when the relaxation succeeded), and the registry's properties under `_tmo_`: origin, validity and novelty,
E_form, E_hull and the reference sets of its hull, band gap, channels, per-ion voltage and capacity, the presets it
passes and the candidate sets that list it.

Candidates (several per structure: one per preset and ion) and candidate sets (which change outside the chain, by
`registry sets`) are read once per run and declared as a dependency (`dependency_time`): a structure is redone when
one of its candidates changed, or a set that lists it, or listed it in any version, changed after it was built.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import cached_property
from typing import Any

from maggma.core import Store

from builders.stage import StageBuilder, _newest
from registry.output.optimade import geometry, structure_attributes
from schemas.base import to_mongo
from schemas.optimade import OptimadeStructureDoc
from schemas.stage import Provenance, State

ION_FIELDS = {"Mg": "mg", "Zn": "zn", "Ca": "ca", "Al": "al"}  # working ion -> suffix of its _tmo_ fields
VIEW_VERSION = 1  # raise when the mapping below changes: every document is then redone


class Labels:
    """What a structure is labelled with outside its own documents: the presets it passes (preset:ion) and the
    sets that list it, and when either last changed."""

    def __init__(self, candidates: Store, candidate_sets: Store):
        self.passes: dict[str, set[str]] = {}
        self.sets: dict[str, set[str]] = {}
        self.changed: dict[str, datetime | None] = {}
        for c in candidates.query(properties=["registry_id", "preset", "ion", "passed", candidates.last_updated_field]):
            rid = c["registry_id"]
            if c.get("passed"):
                self.passes.setdefault(rid, set()).add(f"{c['preset']}:{c['ion']}")
            self.changed[rid] = _newest(self.changed.get(rid), c.get(candidates.last_updated_field))
        for s in candidate_sets.query(properties=["name", "version", "versions.number", "versions.members.registry_id",
                                                  candidate_sets.last_updated_field]):
            for v in s.get("versions") or []:
                for m in v.get("members") or []:
                    rid = m["registry_id"]
                    if v.get("number") == s.get("version"):
                        self.sets.setdefault(rid, set()).add(s["name"])
                    self.changed[rid] = _newest(self.changed.get(rid), s.get(candidate_sets.last_updated_field))


class OptimadeBuilder(StageBuilder):
    stage = "optimade"
    dependency_field = "registry_id"

    def __init__(self, structures: Store, validated: Store, relaxed: Store, predicted: Store, stability: Store,
                 tunnels: Store, insertion: Store, candidates: Store, candidate_sets: Store, optimade: Store,
                 query: dict | None = None, force: bool = False, chunk_size: int = 500):
        """`candidate_sets`: a store on the sets' collection keyed by name, last_updated_field `updated_at`."""
        self.candidates, self.candidate_sets = candidates, candidate_sets
        super().__init__(structures, optimade, inputs=[validated, relaxed, predicted, stability, tunnels, insertion],
                         reads=[candidates, candidate_sets], query=query, force=force, chunk_size=chunk_size)

    def parameters(self) -> dict[str, Any]:
        return {"view_version": VIEW_VERSION}

    @cached_property
    def labels(self) -> Labels:
        """Read once per run (at the first staleness check), so the times recorded are never newer than the
        labels written."""
        return Labels(self.candidates, self.candidate_sets)

    def dependency_time(self, value: Any) -> datetime | None:
        return self.labels.changed.get(value)

    def process_group(self, item: dict) -> list[dict]:
        structure_doc, inputs = item["docs"][0], item["inputs"]
        rid = structure_doc["registry_id"]
        found = geometry(inputs["relaxed"], structure_doc)
        if found is None:
            raise ValueError("no structure to serve")
        structure, relaxed = found
        ok = {name: doc if doc and doc.get("state") != State.failed.value else {} for name, doc in inputs.items()}
        ions = (ok["tunnels"].get("report") or {}).get("ions") or {}
        origin = structure_doc["origin"]
        doc = OptimadeStructureDoc(
            **structure_attributes(structure, rid), registry_id=rid, id=rid,
            formula_pretty=structure_doc["formula_pretty"], chemsys=structure_doc["chemsys"],
            provenance=Provenance(builder=self.stage, parameters=self.parameters()),
            origin_kind=origin["kind"], origin_source=origin["source"], origin_id=origin["source_id"], relaxed=relaxed,
            valid=ok["validated"].get("valid"), novel=ok["validated"].get("novel"),
            formation_energy_per_atom=ok["predicted"].get("formation_energy_per_atom"),
            band_gap=ok["predicted"].get("band_gap"), e_above_hull=ok["stability"].get("e_above_hull"),
            hull_reference_sets=ok["stability"].get("reference_sets") or [],
            has_1d_channel=ok["tunnels"].get("has_1d_channel"), free_sphere=ok["tunnels"].get("free_sphere"),
            **_per_ion("channel_dimensionality", {ion: (c or {}).get("dimensionality") for ion, c in ions.items()}),
            **_per_ion("average_voltage", ok["insertion"].get("average_voltage") or {}),
            **_per_ion("capacity_grav", ok["insertion"].get("capacity_grav") or {}),
            passes=sorted(self.labels.passes.get(rid, ())), sets=sorted(self.labels.sets.get(rid, ())),
        )
        return [to_mongo(doc, by_alias=True)]


def _per_ion(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """{ion: value} as the flat fields OPTIMADE filters can reach: {name_mg: value, ...}."""
    return {f"{name}_{suffix}": values.get(ion) for ion, suffix in ION_FIELDS.items()}

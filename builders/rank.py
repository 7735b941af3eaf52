"""rank: validated + predicted + stability + tunnels + insertion -> candidates, for one preset and working ion.

Whether a formula is already known comes from `validated` (`formula_known`). A candidate is redone when any of its
stage documents changed since it was ranked, or the preset's criteria changed. A document's change time is the
later of its `last_updated` (its source's, maggma's convention) and its `provenance.built_at`: a stage can rewrite
a document without a newer source (insertion adding an ion to a framework, a stage run with force). Each
candidate stores every criterion's value, threshold and verdict, and the joined values.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from math import ceil
from typing import Any

from maggma.core import Builder, Store
from maggma.utils import grouper

from registry.rank import get_preset, judge
from registry.stores import among, naive_utc
from schemas.base import to_mongo
from schemas.candidate import CandidateDoc
from schemas.stage import Provenance, State

# What each stage contributes to the joined record the criteria read.
STAGE_FIELDS = {
    "validated": ["formula_pretty", "elements", "novel", "unique", "formula_known", "origin_kind", "members"],
    "predicted": ["formation_energy_per_atom", "band_gap", "converged", "energy_per_atom"],
    "stability": ["e_above_hull", "e_above_hull_all", "thin_hull", "n_references", "hull_complete", "reference_sets",
                  "warnings", "state", "error"],
    "tunnels": ["has_1d_channel", "channel_axis", "free_sphere", "admits", "state", "error"],
    "dft_comparison": ["dft_validated", "state", "error"],  # informational: no preset criterion reads it
    "insertion": ["average_voltage", "capacity_grav", "max_delta_volume", "state", "error"],  # ion -> value
}
CHANGED = ["registry_id", "last_updated", "provenance.built_at"]


def _changed(doc: dict) -> datetime:
    """When a stage document last changed (see the module's docstring), to the millisecond as MongoDB keeps the
    candidate's `sources_updated`, so an unchanged document never looks newer."""
    built = (doc.get("provenance") or {}).get("built_at")
    if isinstance(built, str):  # nested dates are stored as ISO text (schemas.base.to_mongo)
        built = datetime.fromisoformat(built)
    changed = max(naive_utc(doc["last_updated"]), naive_utc(built)) if built else naive_utc(doc["last_updated"])
    return changed.replace(microsecond=changed.microsecond // 1000 * 1000)


class RankBuilder(Builder):
    def __init__(self, validated: Store, predicted: Store, stability: Store, tunnels: Store, dft_comparison: Store,
                 insertion: Store, candidates: Store, preset: str = "tunnel", ion: str = "Mg",
                 query: dict | None = None, force: bool = False, chunk_size: int = 200):
        self.validated, self.predicted, self.stability, self.tunnels = validated, predicted, stability, tunnels
        self.dft_comparison, self.insertion = dft_comparison, insertion
        self.stores = {"validated": validated, "predicted": predicted, "stability": stability, "tunnels": tunnels,
                       "dft_comparison": dft_comparison, "insertion": insertion}
        self.candidates = candidates
        self.preset = preset
        self._preset = get_preset(preset)
        self.ion = ion
        self.query = query or {}
        self.force = force
        self.chunk_size = chunk_size
        self.total: int | None = None
        super().__init__(sources=list(self.stores.values()), targets=[candidates], chunk_size=chunk_size)

    def _scope(self) -> dict:
        return {"preset": self._preset.name, "ion": self.ion}

    def _stale(self) -> list[str]:
        newest: dict[str, datetime] = {}
        ids = set(self.stores["predicted"].distinct("registry_id", {"state": State.successful.value, **self.query}))
        for store in self.stores.values():
            for d in store.query(criteria={"registry_id": {"$in": list(ids)}}, properties=CHANGED):
                changed = _changed(d)
                newest[d["registry_id"]] = max(newest.get(d["registry_id"], changed), changed)
        if self.force:
            return sorted(ids)
        done = {d["registry_id"]: d for d in self.candidates.query(
            criteria=self._scope(), properties=["registry_id", "sources_updated", "criteria_hash"])}
        digest = self._preset.digest()
        return sorted(rid for rid in ids if rid not in done or done[rid].get("criteria_hash") != digest
                      or newest[rid] > naive_utc(done[rid]["sources_updated"]))

    def prechunk(self, number_splits: int) -> Iterator[dict]:
        stale = self._stale()
        for split in grouper(stale, max(1, ceil(len(stale) / number_splits))):
            yield {"query": among("registry_id", split, self.query)}

    def get_items(self) -> Iterator[dict]:
        stale = self._stale()
        self.total = len(stale)
        for chunk in grouper(stale, self.chunk_size):
            docs = {name: {d["registry_id"]: d for d in store.query(
                criteria={"registry_id": {"$in": list(chunk)}}, properties=[*CHANGED, *fields])}
                for name, (store, fields) in ((n, (self.stores[n], f)) for n, f in STAGE_FIELDS.items())}
            for rid in chunk:
                yield {"registry_id": rid, **{name: docs[name].get(rid) for name in docs}}

    def process_item(self, item: dict) -> dict:
        record: dict[str, Any] = {}
        updated = []
        for name, fields in STAGE_FIELDS.items():
            doc = item.get(name)
            if doc is None:
                continue
            updated.append(_changed(doc))
            if doc.get("state") == State.failed.value:
                record[f"{name}_error"] = doc.get("error")
                continue
            record.update({f: doc.get(f) for f in fields if f not in ("state", "error", "warnings")})
            record["warnings"] = record.get("warnings", []) + (doc.get("warnings") or [])  # every stage's
        verdicts, passed, score = judge(self._preset, record, self.ion)
        rid = item["registry_id"]
        doc = CandidateDoc(
            registry_id=rid, candidate_id=f"{rid}:{self._preset.name}:{self.ion}", preset=self._preset.name,
            ion=self.ion, criteria_hash=self._preset.digest(), last_updated=datetime.now(UTC),
            provenance=Provenance(builder="rank", parameters={"preset": self._preset.name, "ion": self.ion}),
            formula_pretty=record.get("formula_pretty") or "?", elements=record.get("elements") or [],
            origin_kind=record.get("origin_kind") or "?", passed=passed, score=score, criteria=verdicts,
            values={k: v for k, v in record.items() if k != "members"}, sources_updated=max(updated),
        )
        return to_mongo(doc)

    def update_targets(self, items: list[dict]) -> None:
        if items:
            self.candidates.update(items)

    def finalize(self) -> None:
        """Candidates whose structure left the predicted stage are removed."""
        ids = set(self.stores["predicted"].distinct("registry_id", {"state": State.successful.value}))
        have = set(self.candidates.distinct("registry_id", self._scope()))
        gone = list(have - ids)
        if gone and not self.query:
            self.candidates.remove_docs(among("registry_id", gone, self._scope()))
        super().finalize()

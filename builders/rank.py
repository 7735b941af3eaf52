"""rank: validated + relaxed + predicted + stability + tunnels + insertion -> candidates, for one preset and ion.

Whether a formula is already known comes from `validated` (`formula_known`). A candidate is redone (builders/stage.py's
rule) when any of its stage documents changed since it was ranked, or the preset's criteria changed. Each
candidate stores every criterion's value, threshold and verdict, and the joined values.
"""

from __future__ import annotations

from typing import Any

from maggma.core import Store
from pymongo import UpdateOne

from builders.stage import StageBuilder
from registry.db.stores import RANKED, among
from registry.science.criteria import get_preset, judge
from schemas.base import to_mongo
from schemas.candidate import CandidateDoc, CandidateValues
from schemas.stage import Provenance, State

# What each stage contributes to the joined record the criteria read: declared on the candidate's schema.
STAGE_FIELDS = CandidateValues.stage_fields()


class RankBuilder(StageBuilder):
    stage = "rank"

    def __init__(self, validated: Store, relaxed: Store, predicted: Store, stability: Store, tunnels: Store,
                 dft_comparison: Store, insertion: Store, candidates: Store, preset: str = "tunnel", ion: str = "Mg",
                 query: dict | None = None, force: bool = False, chunk_size: int = 200):
        self.validated, self.relaxed, self.predicted, self.stability = validated, relaxed, predicted, stability
        self.tunnels, self.dft_comparison, self.insertion = tunnels, dft_comparison, insertion
        self.candidates = candidates
        self.preset = preset
        self._preset = get_preset(preset)
        self.ion = ion
        super().__init__(predicted, candidates,
                         inputs=[validated, relaxed, stability, tunnels, dft_comparison, insertion],
                         query={"state": State.successful.value, **(query or {})}, force=force,
                         chunk_size=chunk_size)

    def parameters(self) -> dict[str, Any]:
        """Candidates ranked under other criteria are redone."""
        return {"preset": self._preset.name, "criteria": self._preset.digest(), "ion": self.ion}

    def target_scope(self) -> dict:
        return {"preset": self._preset.name, "ion": self.ion}

    def process_group(self, group: dict) -> list[dict]:
        return [self._candidate({"registry_id": group["group"], "predicted": group["docs"][0], **group["inputs"]})]

    def _candidate(self, item: dict) -> dict:
        record: dict[str, Any] = {"warnings": []}
        for name, fields in STAGE_FIELDS.items():
            doc = item.get(name)
            if doc is None:
                continue
            if doc.get("state") == State.failed.value:
                record[f"{name}_error"] = doc.get("error")
                continue
            record.update({f: doc.get(f) for f in fields})
            record["warnings"] += doc.get("warnings") or []  # every stage's
        if (tunnels := item.get("tunnels")) and "free_sphere" in record:  # the framework the working ion sees
            channel = ((tunnels.get("report") or {}).get("ions") or {}).get(self.ion) or {}
            record["free_sphere"] = channel.get("free_sphere")
        verdicts, passed, score = judge(self._preset, record, self.ion)
        rid = item["registry_id"]
        doc = CandidateDoc(
            registry_id=rid, candidate_id=f"{rid}:{self._preset.name}:{self.ion}", preset=self._preset.name,
            ion=self.ion, criteria_hash=self._preset.digest(),
            provenance=Provenance(builder="rank", parameters={"preset": self._preset.name, "ion": self.ion}),
            formula_pretty=record.get("formula_pretty") or "?", elements=record.get("elements") or [],
            origin_kind=record.get("origin_kind") or "?", passed=passed, score=score, criteria=verdicts,
            values=CandidateValues(**record),
        )
        return to_mongo(doc)

    def finalize(self) -> None:
        """Candidates whose structure left the predicted stage are removed; the ranks are brought up to date (a
        build that found nothing changed leaves both as they are)."""
        if getattr(self, "unchanged", False):
            super().finalize()
            return
        ids = set(self.predicted.distinct("registry_id", {"state": State.successful.value}))
        have = set(self.candidates.distinct("registry_id", self.target_scope()))
        gone = list(have - ids)
        if gone and set(self.query) <= {"state"}:
            self.candidates.remove_docs(among("registry_id", gone, self.target_scope()))
        order_candidates(self.candidates, self.target_scope())
        super().finalize()


def order_candidates(candidates: Store, scope: dict) -> None:
    """Write the `rank` of the best `RANKED` candidates within `scope` (a preset and ion; 1 = best: passed first,
    then by score), so "the best N" are N indexed equalities (`Registry.top_candidates`): the embedded server sorts without
    an index, which cost about a second at 10,000 candidates (bench/load.py). Only the top is ranked, so a change
    rewrites at most `RANKED` ranks, not one per candidate. `last_updated` is left alone: an order is no content."""
    key = candidates.key
    docs = list(candidates.query(criteria=scope, properties=[key, "passed", "score", "rank"]))
    docs.sort(key=lambda d: (not d.get("passed"), -(d.get("score") or 0.0), d[key]))
    ops = [UpdateOne({key: d[key]}, {"$set": {"rank": n}}) for n, d in enumerate(docs[:RANKED], start=1)
           if d.get("rank") != n]
    ops += [UpdateOne({key: d[key]}, {"$unset": {"rank": ""}}) for d in docs[RANKED:] if d.get("rank") is not None]
    for i in range(0, len(ops), 5000):
        candidates._collection.bulk_write(ops[i:i + 5000], ordered=False)

"""rank: validated + predicted + stability + tunnels + insertion -> candidates, for one preset and working ion.

Whether a formula is already known comes from `validated` (`formula_known`). A candidate is redone (builders/stage.py's
rule) when any of its stage documents changed since it was ranked, or the preset's criteria changed. Each
candidate stores every criterion's value, threshold and verdict, and the joined values.
"""

from __future__ import annotations

from typing import Any

from maggma.core import Store

from builders.stage import StageBuilder
from registry.db.stores import among
from registry.science.criteria import get_preset, judge
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


class RankBuilder(StageBuilder):
    stage = "rank"

    def __init__(self, validated: Store, predicted: Store, stability: Store, tunnels: Store, dft_comparison: Store,
                 insertion: Store, candidates: Store, preset: str = "tunnel", ion: str = "Mg",
                 query: dict | None = None, force: bool = False, chunk_size: int = 200):
        self.validated, self.predicted, self.stability, self.tunnels = validated, predicted, stability, tunnels
        self.dft_comparison, self.insertion = dft_comparison, insertion
        self.candidates = candidates
        self.preset = preset
        self._preset = get_preset(preset)
        self.ion = ion
        super().__init__(predicted, candidates, inputs=[validated, stability, tunnels, dft_comparison, insertion],
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
        record: dict[str, Any] = {}
        for name, fields in STAGE_FIELDS.items():
            doc = item.get(name)
            if doc is None:
                continue
            if doc.get("state") == State.failed.value:
                record[f"{name}_error"] = doc.get("error")
                continue
            record.update({f: doc.get(f) for f in fields if f not in ("state", "error", "warnings")})
            record["warnings"] = record.get("warnings", []) + (doc.get("warnings") or [])  # every stage's
        verdicts, passed, score = judge(self._preset, record, self.ion)
        rid = item["registry_id"]
        doc = CandidateDoc(
            registry_id=rid, candidate_id=f"{rid}:{self._preset.name}:{self.ion}", preset=self._preset.name,
            ion=self.ion, criteria_hash=self._preset.digest(),
            provenance=Provenance(builder="rank", parameters={"preset": self._preset.name, "ion": self.ion}),
            formula_pretty=record.get("formula_pretty") or "?", elements=record.get("elements") or [],
            origin_kind=record.get("origin_kind") or "?", passed=passed, score=score, criteria=verdicts,
            values={k: v for k, v in record.items() if k != "members"},
        )
        return to_mongo(doc)

    def finalize(self) -> None:
        """Candidates whose structure left the predicted stage are removed."""
        ids = set(self.predicted.distinct("registry_id", {"state": State.successful.value}))
        have = set(self.candidates.distinct("registry_id", self.target_scope()))
        gone = list(have - ids)
        if gone and set(self.query) <= {"state"}:
            self.candidates.remove_docs(among("registry_id", gone, self.target_scope()))
        super().finalize()

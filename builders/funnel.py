"""funnel: every stage -> funnel. For each validated structure, the stage where it left the funnel and why.

The stage documents say what happened inside a stage; this record says what happened to a structure across all of
them under one preset and ion, including the cuts that write no document of their own (the prefilter, the
screen's limit, the hull gate before the channel analysis). Like every stage, a record is rewritten only when its
content changed.
"""

from __future__ import annotations

from typing import Any

from maggma.core import Store

from builders.stage import StageBuilder
from registry.db.stores import query_among
from registry.science.criteria import PREFILTER_FLAGS, get_preset, judge
from schemas.base import to_mongo
from schemas.funnel import FunnelDoc
from schemas.stage import Provenance


class FunnelBuilder(StageBuilder):
    stage = "funnel"

    def __init__(self, validated: Store, screened: Store, relaxed: Store, predicted: Store, stability: Store,
                 tunnels: Store, candidates: Store, funnel: Store, preset: str = "tunnel", ion: str = "Mg",
                 scope: dict | None = None, margin: float = 0.5, channel_margin: float = 0.4, exhaustive: bool = False,
                 query: dict | None = None, force: bool = False, chunk_size: int = 500):
        """`scope`, the margins and `exhaustive` must be the build's own, so the record tells the cuts it made."""
        self.validated, self.screened, self.relaxed, self.predicted = validated, screened, relaxed, predicted
        self.stability, self.tunnels, self.candidates, self.funnel = stability, tunnels, candidates, funnel
        self.preset, self.ion, self.scope, self.margin = preset, ion, scope, margin
        self.exhaustive = exhaustive
        self._preset = get_preset(preset)
        self.limit = self._preset.threshold("e_above_hull")
        self.screen_limits = {} if exhaustive else self._preset.screen_limits(margin)
        self.channel_margin = channel_margin
        self.channel_limit = None if not self.screen_limits else self._preset.channel_limit(ion, channel_margin)
        super().__init__(validated, funnel, inputs=[screened, relaxed, predicted, stability, tunnels, candidates],
                         query=query, force=force, chunk_size=chunk_size,
                         projection=["registry_id", "state", "error", "valid", "reasons", "formula_pretty", "elements",
                                     "origin_kind", *PREFILTER_FLAGS])

    def parameters(self) -> dict[str, Any]:
        return {"preset": self._preset.name, "criteria": self._preset.digest(), "ion": self.ion,
                "scope": self._scope(), "margin": self.margin, "channel_margin": self.channel_margin,
                "exhaustive": self.exhaustive}

    def input_scope(self, store: Store) -> dict:
        return self.target_scope() if store is self.candidates else {}

    def target_scope(self) -> dict:
        return {"preset": self._preset.name, "ion": self.ion}

    def _scope(self) -> dict:
        return self._preset.prefilter() if self.scope is None else self.scope

    def context(self, groups: list[dict]) -> None:
        """Whether each structure is inside the preset's prefilter (or the build's scope)."""
        ids = [g["group"] for g in groups]
        inside = {d["registry_id"] for d in query_among(self.validated, "registry_id", ids, self._scope(),
                                                        ["registry_id"])}
        for g in groups:
            g["in_scope"] = g["group"] in inside

    def process_group(self, group: dict) -> list[dict]:
        item = {"validated": group["docs"][0], "in_scope": group["in_scope"], **group["inputs"]}
        v = item["validated"]
        reached, left_at, pending, reason = self._verdict(item)
        doc = FunnelDoc(funnel_id=f"{v['registry_id']}:{self.preset}:{self.ion}", registry_id=v["registry_id"],
                        preset=self.preset, ion=self.ion, formula_pretty=v.get("formula_pretty") or "?",
                        origin_kind=v.get("origin_kind") or "?", reached=reached, left_at=left_at, pending=pending,
                        reason=reason, warnings=(item["relaxed"] or {}).get("warnings") or [],
                        energy_source=(item["predicted"] or {}).get("energy_source"),
                        provenance=Provenance(builder="funnel", parameters=self.parameters()))
        return [to_mongo(doc)]

    def _verdict(self, item: dict) -> tuple[str, str | None, bool, str | None]:
        """(reached, left_at, pending, reason)."""
        v = item["validated"]
        if v.get("state") == "failed":
            return "validate", "validate", False, v.get("error")
        if not v.get("valid"):
            return "validate", "validate", False, "; ".join(v.get("reasons") or [])
        if not item["in_scope"]:
            verdicts, _, _ = judge(self._preset, v, self.ion)
            decided = [x.name for x in verdicts if x.hard and not x.passed and x.field in ("elements", *PREFILTER_FLAGS)]
            return "validate", "prefilter", False, "outside the preset: fails " + (", ".join(decided) or "the scope")
        chain = [("screen", "screened"), ("relax", "relaxed"), ("predict", "predicted"), ("stability", "stability"),
                 ("tunnels", "tunnels")]
        reached = "prefilter"
        for stage, name in chain:
            doc = item[name]
            if stage == "screen" and not self.screen_limits:
                continue
            if doc is None:
                return reached, stage, True, f"{stage} has not run on it yet"
            if doc.get("state") == "failed":
                return reached, stage, False, doc.get("error")
            if stage == "screen" and (over := [f"{field} {doc[field]:.3f} eV/atom > {limit:.3f} (limit + margin "
                                               f"{self.margin})" for field, limit in self.screen_limits.items()
                                               if doc.get(field) is not None and doc[field] > limit]):
                return "screen", "screen", False, "; ".join(over)
            if stage == "screen" and self.channel_limit is not None and (
                    df := (doc.get("static_free_sphere") or {}).get(self.ion)) is not None and df < self.channel_limit:
                return "screen", "screen", False, (f"static free sphere for {self.ion} {df:.2f} Å < {self.channel_limit:.2f}"
                                                   f" (2 r - channel margin {self.channel_margin})")
            gate = not self.exhaustive and self.limit is not None
            if stage == "stability" and gate and doc["e_above_hull"] > self.limit:
                return "stability", "stability", False, f"E_hull {doc['e_above_hull']:.3f} eV/atom > {self.limit}"
            reached = stage
        candidate = item["candidates"]
        if candidate is None:
            return reached, "rank", True, "rank has not run on it yet"
        if candidate["passed"]:
            return "rank", None, False, None
        failed = [c for c in candidate["criteria"] if c["hard"] and not c["passed"]]
        return reached, "rank", False, "fails " + ", ".join(c["name"] + (f" ({c['note']})" if c.get("note") else "")
                                                          for c in failed)

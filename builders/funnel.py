"""funnel: every stage -> funnel. For each validated structure, the stage where it left the funnel and why.

The stage documents say what happened inside a stage; this record says what happened to a structure across all of
them under one preset and ion, including the cuts that write no document of their own (the prefilter, the
screen's limit, the hull gate before the channel analysis). A record is written only when it changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from math import ceil

from maggma.core import Builder, Store
from maggma.utils import grouper

from registry.rank import PREFILTER_FLAGS, get_preset, judge
from registry.stores import among
from schemas.funnel import FunnelDoc

STAGE_FIELDS = {
    "screened": ["state", "error", "static_e_above_hull", "static_formation_energy_per_atom", "static_free_sphere"],
    "relaxed": ["state", "error", "status"],
    "predicted": ["state", "error"],
    "stability": ["state", "error", "e_above_hull"],
    "tunnels": ["state", "error"],
    "candidates": ["passed", "criteria"],
}


HASHED = ("registry_id", "preset", "ion", "formula_pretty", "origin_kind", "reached", "left_at", "pending", "reason")


def content_hash(record: dict) -> str:
    """A record is rewritten only when this changes."""
    body = {f: record[f] for f in HASHED}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


class FunnelBuilder(Builder):
    def __init__(self, validated: Store, screened: Store, relaxed: Store, predicted: Store, stability: Store,
                 tunnels: Store, candidates: Store, funnel: Store, preset: str = "tunnel", ion: str = "Mg",
                 scope: dict | None = None, margin: float = 0.5, channel_margin: float = 0.4, exhaustive: bool = False,
                 query: dict | None = None, chunk_size: int = 500):
        """`scope`, the margins and `exhaustive` must be the build's own, so the record tells the cuts it made."""
        self.validated, self.screened, self.relaxed, self.predicted = validated, screened, relaxed, predicted
        self.stability, self.tunnels, self.candidates, self.funnel = stability, tunnels, candidates, funnel
        self.preset, self.ion, self.scope, self.margin = preset, ion, scope, margin
        self.exhaustive = exhaustive
        self.query = query or {}
        self._preset = get_preset(preset)
        self.limit = self._preset.threshold("e_above_hull")
        self.screen_limits = {} if exhaustive else self._preset.screen_limits(margin)
        self.channel_margin = channel_margin
        self.channel_limit = None if not self.screen_limits else self._preset.channel_limit(ion, channel_margin)
        self.total: int | None = None
        stages = [screened, relaxed, predicted, stability, tunnels, candidates]
        super().__init__(sources=[validated, *stages], targets=[funnel], chunk_size=chunk_size)

    def _scope(self) -> dict:
        return self._preset.prefilter() if self.scope is None else self.scope

    def prechunk(self, number_splits: int) -> Iterator[dict]:
        ids = sorted(self.validated.distinct("registry_id", self.query))
        for split in grouper(ids, max(1, ceil(len(ids) / number_splits))):
            yield {"query": among("registry_id", split, self.query)}

    def get_items(self) -> Iterator[dict]:
        ids = sorted(self.validated.distinct("registry_id", self.query))
        in_scope = set(self.validated.distinct("registry_id", {"$and": [self.query, self._scope()]}))
        self.total = len(ids)
        stores = {"screened": self.screened, "relaxed": self.relaxed, "predicted": self.predicted,
                  "stability": self.stability, "tunnels": self.tunnels, "candidates": self.candidates}
        for chunk in grouper(ids, self.chunk_size):
            chunk = list(chunk)
            where = {"registry_id": {"$in": chunk}}
            validated = {d["registry_id"]: d for d in self.validated.query(
                criteria=where, properties=["registry_id", "state", "error", "valid", "reasons", "formula_pretty",
                                            "elements", "origin_kind", *PREFILTER_FLAGS])}
            stage_docs = {}
            for name, store in stores.items():
                crit = {**where, "preset": self.preset, "ion": self.ion} if name == "candidates" else where
                stage_docs[name] = {d["registry_id"]: d for d in store.query(
                    criteria=crit, properties=["registry_id", *STAGE_FIELDS[name]])}
            existing = {d["registry_id"]: d.get("content_hash") for d in self.funnel.query(
                criteria={**where, "preset": self.preset, "ion": self.ion}, properties=["registry_id", "content_hash"])}
            for rid in chunk:
                yield {"validated": validated[rid], "in_scope": rid in in_scope, "existing": existing.get(rid),
                       **{name: docs.get(rid) for name, docs in stage_docs.items()}}

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
        failed = [c["name"] for c in candidate["criteria"] if c["hard"] and not c["passed"]]
        return reached, "rank", False, "fails " + ", ".join(failed)

    def process_item(self, item: dict) -> dict | None:
        v = item["validated"]
        reached, left_at, pending, reason = self._verdict(item)
        body = {"registry_id": v["registry_id"], "preset": self.preset, "ion": self.ion,
                "formula_pretty": v.get("formula_pretty") or "?", "origin_kind": v.get("origin_kind") or "?",
                "reached": reached, "left_at": left_at, "pending": pending, "reason": reason}
        digest = content_hash(body)
        if digest == item["existing"]:
            return None
        doc = FunnelDoc(funnel_id=f"{v['registry_id']}:{self.preset}:{self.ion}", content_hash=digest, **body)
        return doc.model_dump(mode="json")

    def update_targets(self, items: list[dict]) -> None:
        if items:
            self.funnel.update(items)

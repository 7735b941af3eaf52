"""Known compounds: what stability and novelty are judged against.

Two kinds, both in the database: reference entries by composition (collection `references`, one or more reference
sets loaded by `registry references load`: the shipped MP table, or MP2020 entries through mp-api), and mined
structures that came with a reference formation energy (e.g. MP-20 rows, MP API documents). A hull is built from
both plus the MP elemental references at zero; it is `complete` only when a loaded reference set covers every
element of the system, so an E_hull against a hull of a few mined compounds is flagged, never passed as confident.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from maggma.core import Store
from pymatgen.analysis.phase_diagram import PDEntry
from pymongo import DeleteMany, ReplaceOne, UpdateOne
from pymongo.errors import BulkWriteError

from registry.db.stores import among, naive_utc
from registry.science.hull import REFERENCE_QUERY, HullBasis, ReferenceHull, reference_entry, reference_query, subsystems
from registry.science.references import ReferenceSet, TableRead, content_hash, read_table, shipped_set
from schemas.base import to_mongo
from schemas.reference import ReferenceEntryDoc, ReferenceSetDoc
from schemas.structure import RejectDoc

if TYPE_CHECKING:
    from registry.db.client import Registry

DUPLICATE_KEY = 11000
HULL_FIELDS = ["reference_id", "formula_pretty", "formation_energy_per_atom"]
MINED_FIELDS = ["formula_pretty", "reference.formation_energy_per_atom", "origin.source_id", "registry_id"]


@dataclass
class LoadReport:
    """What a reference-set load did; `unchanged` with nothing else written when its content was already there."""

    name: str
    compositions: int
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    rejected: int = 0
    seconds: float = 0.0


def entry_documents(name: str, table: TableRead) -> list[dict[str, Any]]:
    """The `references` documents of a table, without timestamps (they are set when written)."""
    docs = []
    for pretty in sorted(table.compositions):
        c = table.compositions[pretty]
        as_given = c.formation_energies_as_given
        body = {"reference_id": f"{name}:{pretty}", "reference_set": name, "formula_pretty": pretty,
                "chemsys": c.chemsys, "elements": c.elements, "nelements": len(c.elements),
                "formation_energy_per_atom": c.formation_energy_per_atom,
                "formation_energy_per_atom_as_given": as_given[0] if as_given else None,
                "correction_shift": c.correction_shift, "formation_energies_as_given": as_given,
                "band_gaps": c.band_gaps}
        body["content_hash"] = content_hash([body])
        docs.append(body)
    return docs


def load_reference_set(reg: Registry, spec: ReferenceSet, table: TableRead,
                       elements_filter: Iterable[str] | None = None, batch_size: int = 5000) -> LoadReport:
    """Write a reference set: only entries whose content changed, then the set's own document (last, so a load
    stopped midway is redone in full by the next one). Loading the same content twice writes nothing."""
    start = time.perf_counter()
    reg.ensure_indexes(["references", "reference_sets", "rejects"])
    docs = entry_documents(spec.name, table)
    digest = content_hash([{"spec": spec.__dict__, "filter": sorted(elements_filter or [])},
                           *(d["content_hash"] for d in docs)])
    report = LoadReport(spec.name, compositions=len(docs), rejected=len(table.rejected))
    sets, references = reg.collection("reference_sets"), reg.collection("references")
    stored = sets.find_one({"name": spec.name}, {"content_hash": 1})
    if stored and stored.get("content_hash") == digest:
        report.unchanged = len(docs)
        report.seconds = time.perf_counter() - start
        return report
    existing = {d["reference_id"]: d.get("content_hash")
                for d in references.find({"reference_set": spec.name}, {"reference_id": 1, "content_hash": 1})}
    now = datetime.now(UTC)
    new: list[dict] = []  # inserted in bulk: upserts cost the embedded server ~7x more per document
    changed: list[ReplaceOne] = []
    for body in docs:
        rid = body["reference_id"]
        if existing.get(rid) == body["content_hash"]:
            report.unchanged += 1
            continue
        doc = to_mongo(ReferenceEntryDoc(**body, last_updated=now))
        if rid in existing:
            changed.append(ReplaceOne({"reference_id": rid}, doc))
        else:
            new.append(doc)
    report.added, report.updated = len(new), len(changed)
    for i in range(0, len(new), batch_size):
        _insert_new(references, new[i:i + batch_size])
    for i in range(0, len(changed), batch_size):
        references.bulk_write(changed[i:i + batch_size], ordered=False)
    gone = sorted(set(existing) - {d["reference_id"] for d in docs})
    for i in range(0, len(gone), batch_size):
        references.bulk_write([DeleteMany({"reference_id": {"$in": gone[i:i + batch_size]}})], ordered=False)
    report.removed = len(gone)
    rejects = [RejectDoc.make(stage="references", source=spec.name, row=row, raw=raw, reason=reason)
               for row, raw, reason in table.rejected]
    if rejects:
        reg.collection("rejects").bulk_write(
            [UpdateOne({"reject_id": r.reject_id}, {"$setOnInsert": to_mongo(r)}, upsert=True) for r in rejects],
            ordered=False)
    with_energy = [d for d in docs if d["formation_energy_per_atom"] is not None]
    set_doc = ReferenceSetDoc(
        **spec.__dict__, elements_filter=sorted(elements_filter) if elements_filter else None,
        elements=sorted({el for d in docs for el in d["elements"]}), n_compositions=len(docs),
        n_formation_energies=len(with_energy),
        n_entries=sum(len(d["formation_energies_as_given"]) for d in docs),
        n_band_gaps=sum(len(d["band_gaps"]) for d in docs), n_rejected=len(rejects), content_hash=digest,
        last_updated=now)
    sets.replace_one({"name": spec.name}, to_mongo(set_doc), upsert=True)
    report.seconds = time.perf_counter() - start
    return report


def _insert_new(collection: Any, docs: list[dict]) -> None:
    """Insert; a document another loader inserted meanwhile (same key, same content) is not an error."""
    try:
        collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
            raise


class KnownCompounds:
    """Reads known compounds for hulls and novelty from three stores a builder declares as sources
    (`references`, `reference_sets`, `structures`); each hull is built once per instance and reused."""

    def __init__(self, references: Store, reference_sets: Store, structures: Store):
        self.references = references
        self.reference_sets = reference_sets
        self.structures = structures
        self._hulls: dict[str, ReferenceHull] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Pickled to maggma's workers without what it has read: each process reads its own."""
        return {k: self.__dict__[k] for k in ("references", "reference_sets", "structures")} | {"_hulls": {}}

    @cached_property
    def sets(self) -> list[dict[str, Any]]:
        """The loaded reference sets, by name."""
        return sorted(self.reference_sets.query(criteria={}, properties=["name", "elements", "energy_scheme",
                                                                         "content_hash", "last_updated"]),
                      key=lambda d: d["name"])

    @cached_property
    def basis(self) -> HullBasis:
        return HullBasis(reference_sets=tuple(f"{s['name']} ({s['content_hash'][:8]})" for s in self.sets),
                         covered=frozenset(el for s in self.sets for el in s["elements"]),
                         energy_schemes=tuple(sorted({s["energy_scheme"] for s in self.sets})))

    @cached_property
    def sets_updated(self) -> datetime | None:
        """When a reference set last changed: every hull built before then is out of date."""
        return max((s["last_updated"] for s in self.sets), default=None, key=naive_utc)

    @cached_property
    def _mined_updated(self) -> dict[str, datetime]:
        pipeline = [{"$match": REFERENCE_QUERY}, {"$group": {"_id": "$chemsys", "lu": {"$max": "$last_updated"}}}]
        return {g["_id"]: g["lu"] for g in self.structures._collection.aggregate(pipeline)}

    def updated(self, chemsys: str) -> datetime | None:
        """Newest change of anything the hull of `chemsys` is built from."""
        times = [self._mined_updated[s] for s in subsystems(chemsys) if s in self._mined_updated]
        if self.sets_updated is not None:
            times.append(self.sets_updated)
        return max(times, default=None, key=naive_utc)

    def entries(self, systems: Iterable[str]) -> list[PDEntry]:
        """Formation-energy entries of the known compounds of exactly these chemical systems."""
        systems = sorted(set(systems))
        out = [reference_entry(d["formula_pretty"], d["formation_energy_per_atom"], d["reference_id"])
               for d in self.references.query(
                   criteria=among("chemsys", systems, {"formation_energy_per_atom": {"$type": "number"}}),
                   properties=HULL_FIELDS)]
        out += [reference_entry(d["formula_pretty"], d["reference"]["formation_energy_per_atom"],
                                d["origin"].get("source_id") or d["registry_id"])
                for d in self.structures.query(criteria=reference_query(systems), properties=MINED_FIELDS)]
        return out

    def hull(self, chemsys: str) -> ReferenceHull:
        """The reference hull of one chemical system (its subsystems included), built once."""
        if chemsys not in self._hulls:
            self._hulls[chemsys] = ReferenceHull(chemsys, self.entries(subsystems(chemsys)), self.basis)
        return self._hulls[chemsys]

    @cached_property
    def reference_formulas(self) -> frozenset[str]:
        """Every composition the loaded reference sets know (one scan, ~2 s for MP's 95,118; then set lookups:
        the embedded server answers `$in` over thousands of keys slowly)."""
        return frozenset(d["formula_pretty"] for d in self.references.query(criteria={},
                                                                           properties=["formula_pretty"]))

def known_compounds(reg: Registry) -> KnownCompounds:
    """Known compounds of a registry, on connected stores: for reading outside a builder (report, CLI)."""
    stores = [reg.store(name) for name in ("references", "reference_sets", "structures")]
    for store in stores:
        store.connect()
    return KnownCompounds(*stores)


def ensure_references(reg: Registry) -> LoadReport | None:
    """Load the shipped reference set when none is loaded; None when one already is."""
    if reg.count({}, collection="reference_sets"):
        return None
    return load_reference_set(reg, shipped_set(), read_table())

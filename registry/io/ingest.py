"""Write `Record`s into the registry: idempotent bulk upserts of structures, rejects for the rest."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import TYPE_CHECKING

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from registry.io.records import Record
from registry.science.validity import structure_problem
from schemas.base import to_mongo
from schemas.structure import RejectDoc, StructureDoc, content_hash

if TYPE_CHECKING:
    from registry.db.client import Registry

DUPLICATE_KEY = 11000


@dataclass
class IngestReport:
    """What happened to every record read; `read == ingested + updated + unchanged + rejected`."""

    read: int = 0
    ingested: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, other: IngestReport) -> None:
        for name in ("read", "ingested", "updated", "unchanged", "rejected"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, n in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + n


def _batches(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    it = iter(records)
    while batch := list(islice(it, size)):
        yield batch


def _reason_kind(reason: str) -> str:
    """Group reasons for the summary ("row 12: unreadable CIF: ..." -> "unreadable CIF")."""
    text = reason.split(": ", 1)[1] if reason.startswith("row ") and ": " in reason else reason
    return text.split(":")[0][:80]


class Ingestor:
    """Turns records into documents and writes them in batches, one bulk write per batch and collection."""

    def __init__(self, registry: Registry, stage: str = "ingest", batch_size: int = 500):
        self.registry = registry
        self.stage = stage
        self.batch_size = batch_size
        registry.ensure_indexes(["structures", "rejects"])
        self.structures = registry.collection("structures")
        self.rejects = registry.collection("rejects")

    def write(self, records: Iterable[Record]) -> IngestReport:
        report = IngestReport()
        for batch in _batches(records, self.batch_size):
            report.add(self._write_batch(batch))
        return report

    def _reject(self, record: Record, reason: str) -> RejectDoc:
        raw = record.raw
        if raw is None and record.structure is not None and len(record.structure) < 200:
            raw = record.structure.to(fmt="poscar")
        return RejectDoc.make(stage=self.stage, source=record.origin.source, source_id=record.origin.source_id,
                              reason=reason, file=record.origin.file, row=record.origin.row, raw=raw)

    def _write_batch(self, batch: list[Record]) -> IngestReport:
        """Hash first, describe later: symmetry analysis (the costly part) runs only for new or changed records."""
        report = IngestReport(read=len(batch))
        hashes: dict[str, tuple[str, Record]] = {}
        rejects: list[RejectDoc] = []
        for record in batch:
            reason = record.reason if record.structure is None else structure_problem(record.structure)
            if reason is not None or record.structure is None:
                rejects.append(self._reject(record, reason or "no structure"))
                continue
            rid = record.origin.registry_id()
            if rid in hashes:  # the same record twice in one input: the last one stands
                report.unchanged += 1
            hashes[rid] = (content_hash(record.structure, record.origin, record.reference), record)

        existing = {d["registry_id"]: d["content_hash"] for d in self.structures.find(
            {"registry_id": {"$in": list(hashes)}}, {"registry_id": 1, "content_hash": 1, "_id": 0})}
        now = datetime.now(UTC)
        ops = []
        for rid, (digest, record) in hashes.items():
            if existing.get(rid) == digest:
                report.unchanged += 1
                continue
            try:
                doc = StructureDoc.from_structure(record.structure, record.origin, record.reference)
            except Exception as exc:  # symmetry analysis or validation of a pathological cell
                rejects.append(self._reject(record, f"cannot describe structure: {type(exc).__name__}: {exc}"))
                continue
            if rid in existing:
                report.updated += 1
            else:
                report.ingested += 1
            body = to_mongo(doc, exclude={"created_at"})
            body["last_updated"] = now
            ops.append(UpdateOne({"registry_id": rid}, {"$set": body, "$setOnInsert": {"created_at": now}},
                                 upsert=True))
        self._bulk(self.structures, ops)

        for reject in rejects:
            report.rejected += 1
            kind = _reason_kind(reject.reason)
            report.reasons[kind] = report.reasons.get(kind, 0) + 1
        # $setOnInsert only: re-reading the same bad record changes nothing.
        self._bulk(self.rejects, [UpdateOne({"reject_id": r.reject_id}, {"$setOnInsert": to_mongo(r)}, upsert=True)
                                  for r in rejects])
        return report

    @staticmethod
    def _bulk(collection, ops: list[UpdateOne]) -> None:
        """Unordered bulk upsert; a concurrent writer that inserted the same key first makes ours an update."""
        if not ops:
            return
        try:
            collection.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            collection.bulk_write([ops[e["index"]] for e in errors], ordered=False)


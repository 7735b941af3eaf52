"""Write `Record`s into the registry: new structures inserted and changed ones replaced in bulk, idempotently;
rejects for the rest."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from multiprocessing import get_context
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pymatgen.core import Structure
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from registry.io.records import Record
from registry.science.validity import structure_problem
from schemas.base import to_mongo
from schemas.structure import Origin, OriginKind, RejectDoc, StructureDoc, content_hash, structure_hash

if TYPE_CHECKING:
    from registry.db.client import Registry

DUPLICATE_KEY = 11000
PLACEHOLDER = Origin(kind=OriginKind.mined, source="-", source_id="-")  # describe() keeps only STRUCTURAL fields
STRUCTURAL = set(StructureDoc.model_fields) - {"registry_id", "origin", "reference", "content_hash", "created_at",
                                               "last_updated"}
PARALLEL_MIN = 256  # distinct new structures from which worker processes pay for their start (~3 s)


@dataclass
class IngestReport:
    """What happened to every record read; `read == ingested + updated + unchanged + rejected`."""

    read: int = 0
    ingested: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    repaired: int = 0  # of `updated`: documents changed in the database since an ingest wrote them
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, other: IngestReport) -> None:
        for name in ("read", "ingested", "updated", "unchanged", "rejected", "repaired"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, n in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + n


@dataclass(frozen=True)
class Stored:
    """What the database holds under a registry id: enough to tell a changed input from another input."""

    content_hash: str | None
    file: str | None
    from_database: bool = True  # False once this ingest wrote it (the write may still be on its way)


def _conflict(rid: str, holder: str | None) -> str:
    """The reject of a record whose id another input holds: the registry never swaps one compound for another
    under the same id (later stages and sets point at it). Its own `--source` keeps both."""
    return (f"same id, another input: {rid} already holds the record from {holder or 'another input'}; it is kept, "
            "not replaced: ingest this one with its own --source")


def _same_file(a: str | None, b: str | None) -> bool:
    """The same input file, however it was spelled (relative paths are taken from the working directory)."""
    return a == b or (a is not None and b is not None and Path(a).resolve() == Path(b).resolve())


def _worker_context() -> BaseContext:
    """Workers forked from a fork server that imported this module once: not forked from the caller (which may
    hold torch's threads or a MongoClient), and without spawn's import of the science stack in every worker
    (3.8 s each)."""
    context = get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _batches(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    it = iter(records)
    while batch := list(islice(it, size)):
        yield batch


def _reason_kind(reason: str) -> str:
    """Group reasons for the summary ("row 12: unreadable CIF: ..." -> "unreadable CIF")."""
    text = reason.split(": ", 1)[1] if reason.startswith("row ") and ": " in reason else reason
    return text.split(":")[0][:80]


def describe(structure: Structure) -> dict[str, Any] | str:
    """What a structure document holds that depends on the structure alone, as stored: emmet's metadata (its
    symmetry analysis is most of a document's cost) and the structure itself; or why the structure is refused."""
    if (problem := structure_problem(structure)) is not None:
        return problem
    try:
        doc = StructureDoc.from_structure(structure, PLACEHOLDER)
    except Exception as exc:  # symmetry analysis of a pathological cell, or a document the schema refuses
        return f"cannot describe structure: {type(exc).__name__}: {exc}"
    return to_mongo(doc, include=STRUCTURAL)


class Ingestor:
    """Turns records into documents and writes them in batches: one read of what a source already has, new
    documents inserted in bulk, changed ones replaced in bulk.

    What makes it fast (bench/ingest.py): what is derived from the structure alone (emmet's metadata and its
    symmetry analysis) is computed once per distinct structure (`structure_hash`), in `workers` processes when
    there are many; what the database already holds is read once per source, not per batch (the embedded server
    answers `$in` over thousands of keys slowly); new documents are inserted, not upserted (about 5x cheaper
    on the embedded server)."""

    def __init__(self, registry: Registry, stage: str = "ingest", batch_size: int = 2000, workers: int | None = None):
        self.registry = registry
        self.stage = stage
        self.batch_size = batch_size
        self.workers = workers if workers is not None else len(os.sched_getaffinity(0))
        registry.ensure_indexes(["structures", "rejects"])
        self.structures = registry.collection("structures")
        self.rejects = registry.collection("rejects")
        self._stored: dict[str, dict[str, Stored]] = {}  # source -> registry_id -> what the database holds
        self._described: dict[str, dict[str, Any] | str] = {}  # structure hash -> `describe`
        self._pool: ProcessPoolExecutor | None = None

    def write(self, records: Iterable[Record]) -> IngestReport:
        """Every record written or rejected. One batch's writes go to the server while the next is prepared
        (a writer thread: the server works on its own core meanwhile); a failed write stops the ingest."""
        report = IngestReport()
        pending: Future | None = None
        try:
            with ThreadPoolExecutor(1) as writer:
                for batch in _batches(records, self.batch_size):
                    part, writes = self._write_batch(batch)
                    if pending is not None:
                        pending.result()
                    pending = writer.submit(writes)
                    report.add(part)
                if pending is not None:
                    pending.result()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
        return report

    def _stored_hashes(self, source: str) -> dict[str, Stored]:
        """What the database holds for a source: one indexed read per source and ingest."""
        if source not in self._stored:
            self._stored[source] = {d["registry_id"]: Stored(d.get("content_hash"), d.get("origin", {}).get("file"))
                                    for d in self.structures.find({"origin.source": source},
                                                                  {"registry_id": 1, "content_hash": 1,
                                                                   "origin.file": 1, "_id": 0})}
        return self._stored[source]

    def _altered(self, same: dict[str, tuple[str, str, Record]]) -> set[str]:
        """Which documents whose stored content hash matches the input no longer hold that content: their
        structure, origin and reference hashed again (a document changed by hand, or by someone who could write to
        the database). One read per batch, in chunks of keys; derived fields (formula, symmetry) are not checked."""
        ids = [rid for rid, (_, _, record) in same.items()
               if self._stored_hashes(record.origin.source)[rid].from_database]
        altered = set(ids)
        fields = ["registry_id", "structure", "origin", "reference", "content_hash"]
        for doc in self.registry.find_among("registry_id", ids, fields=fields):
            try:
                digest = structure_hash(Structure.from_dict(doc["structure"]))
                rehashed = content_hash(digest, Origin.model_validate(doc["origin"]), doc.get("reference") or {})
            except Exception:  # a document too damaged to read is altered too
                continue
            if rehashed == doc.get("content_hash") == same[doc["registry_id"]][1]:
                altered.discard(doc["registry_id"])
        return altered

    def _describe(self, structures: dict[str, Structure]) -> None:
        """`describe` each distinct structure not seen yet, over worker processes when there are many."""
        todo = {h: s for h, s in structures.items() if h not in self._described}
        if len(todo) >= PARALLEL_MIN and self.workers > 1:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.workers, mp_context=_worker_context())
            results = self._pool.map(describe, todo.values(), chunksize=16)
        else:
            results = map(describe, todo.values())
        self._described.update(zip(todo, results, strict=True))

    def _reject(self, record: Record, reason: str) -> RejectDoc:
        raw = record.raw
        if raw is None and record.structure is not None and len(record.structure) < 200:
            raw = record.structure.to(fmt="poscar")
        return RejectDoc.make(stage=self.stage, source=record.origin.source, source_id=record.origin.source_id,
                              reason=reason, file=record.origin.file, row=record.origin.row, raw=raw)

    def _write_batch(self, batch: list[Record]) -> tuple[IngestReport, Callable[[], None]]:
        """Hash first, describe later: only new or changed records are described, once per distinct structure."""
        report = IngestReport(read=len(batch))
        todo: dict[str, tuple[str, str, Record]] = {}  # registry id -> (structure hash, content hash, record)
        rejects: list[RejectDoc] = []
        for record in batch:
            if record.structure is None:
                rejects.append(self._reject(record, record.reason or "no structure"))
                continue
            rid = record.origin.registry_id()
            if rid in todo and not _same_file(todo[rid][2].origin.file, record.origin.file):
                rejects.append(self._reject(record, _conflict(rid, todo[rid][2].origin.file)))
                continue
            if rid in todo:  # the same record twice in one input: the last one stands
                report.unchanged += 1
            try:
                reference = StructureDoc.model_validate_reference(record.reference)
                digest = structure_hash(record.structure)
            except Exception as exc:
                rejects.append(self._reject(record, f"unreadable record: {type(exc).__name__}: {exc}"))
                continue
            todo[rid] = (digest, content_hash(digest, record.origin, reference), record)

        changed: dict[str, tuple[str, str, Record]] = {}
        same: dict[str, tuple[str, str, Record]] = {}
        for rid, (digest, chash, record) in todo.items():
            stored = self._stored_hashes(record.origin.source).get(rid)
            if stored is None or stored.content_hash != chash and _same_file(stored.file, record.origin.file):
                changed[rid] = (digest, chash, record)
            elif stored.content_hash != chash:  # another input under this id: never swapped in
                rejects.append(self._reject(record, _conflict(rid, stored.file)))
            else:
                same[rid] = (digest, chash, record)
        for rid in self._altered(same):  # changed in the database since it was written: written again
            changed[rid] = same.pop(rid)
            report.repaired += 1
        report.unchanged += len(same)
        self._describe({digest: record.structure for digest, _, record in changed.values()})
        now = datetime.now(UTC)
        new, updates = [], []
        for rid, (digest, chash, record) in changed.items():
            described = self._described[digest]
            if isinstance(described, str):
                rejects.append(self._reject(record, described))
                continue
            body = {**described, "registry_id": rid, "origin": record.origin.model_dump(mode="json"),
                    "reference": StructureDoc.model_validate_reference(record.reference), "content_hash": chash,
                    "last_updated": now}
            stored = self._stored_hashes(record.origin.source)
            if rid in stored:
                report.updated += 1
                updates.append(UpdateOne({"registry_id": rid}, {"$set": body, "$setOnInsert": {"created_at": now}},
                                         upsert=True))
            else:
                report.ingested += 1
                new.append({**body, "created_at": now})
            stored[rid] = Stored(chash, record.origin.file, from_database=False)
        reject_ops = [UpdateOne({"reject_id": r.reject_id}, {"$setOnInsert": to_mongo(r)}, upsert=True)
                      for r in rejects]
        for reject in rejects:
            report.rejected += 1
            kind = _reason_kind(reject.reason)
            report.reasons[kind] = report.reasons.get(kind, 0) + 1

        def writes() -> None:
            self._insert(new)
            self._bulk(self.structures, updates)
            # $setOnInsert only: re-reading the same bad record changes nothing.
            self._bulk(self.rejects, reject_ops)

        return report, writes

    def _insert(self, docs: list[dict[str, Any]]) -> None:
        """Insert new documents; one another ingest inserted meanwhile (same key) is written as an upsert."""
        if not docs:
            return
        try:
            self.structures.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            self._bulk(self.structures, [UpdateOne({"registry_id": docs[e["index"]]["registry_id"]},
                                                   {"$set": {k: v for k, v in docs[e["index"]].items()
                                                             if k not in ("_id", "created_at")}}, upsert=True)
                                         for e in errors])

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


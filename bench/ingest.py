"""Ingest throughput into a fresh embedded database: first ingest, and a no-op re-ingest of the same records,
against the raw insert rate of the very same documents into the same server (the floor the database sets).

    PYTHONPATH=. python bench/ingest.py [--n 10000] [--batch 2000] [--workers 2]

The MP-20 sample (1,112 rows) is repeated with distinct source ids until N records, so every record is a
distinct document (same structures, different ids). CIF parsing is done once, before timing, so the table
measures the registry's own work (documents, symmetry metadata, hashing, bulk upserts) and the database.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path

from rich.console import Console
from rich.table import Table

from registry.db.client import Registry
from registry.db.server import EmbeddedServer
from registry.db.stores import COLLECTIONS
from registry.io.ingest import Ingestor
from registry.io.readers import read_csv
from registry.io.records import Record

STRUCTURES = COLLECTIONS["structures"]
SAMPLE = Path(__file__).resolve().parents[1] / "registry" / "data" / "sample" / "mp20"


def records(n: int) -> list[Record]:
    base = [r for f in sorted(SAMPLE.glob("*.csv")) for r in read_csv(f)]
    out = []
    for i, r in enumerate(islice(cycle(base), n)):
        copy = i // len(base)
        origin = r.origin.model_copy(update={"source_id": f"{r.origin.source_id}#{copy}" if copy else r.origin.source_id})
        out.append(Record(origin, r.structure, r.reference))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=None, help="metadata processes (default: every core)")
    args = parser.parse_args()

    t = time.perf_counter()
    recs = records(args.n)
    parse_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as home:
        server = EmbeddedServer(Path(home))
        try:
            reg = Registry(server.ensure_running(auth=False).uri + "bench")
            rows = []
            for label in ("first ingest", "re-ingest (no-op)"):
                t = time.perf_counter()
                report = Ingestor(reg, batch_size=args.batch, workers=args.workers).write(recs)
                dt = time.perf_counter() - t
                rows.append((label, report, dt))
            count = reg.count()
            docs = list(reg.collection("structures").find({}, {"_id": 0}))
            raw = {}
            for label, indexes in (("no secondary index", ()), ("the registry's indexes", STRUCTURES.indexes)):
                coll = reg.collection(f"raw_{len(raw)}")
                coll.create_index("registry_id", unique=True)
                for field in indexes:
                    coll.create_index(field)
                t = time.perf_counter()
                for i in range(0, len(docs), args.batch):
                    coll.insert_many(docs[i:i + args.batch], ordered=False)
                raw[label] = len(docs) / (time.perf_counter() - t)
        finally:
            server.stop()

    table = Table("run", "records", "new", "unchanged", "seconds", "records/s",
                  title=f"ingest into a fresh embedded SecantusDB, batch {args.batch} (CIF parsing {parse_s:.1f} s, untimed)")
    for label, r, dt in rows:
        table.add_row(label, str(r.read), str(r.ingested), str(r.unchanged), f"{dt:.1f}", f"{r.read / dt:.0f}")
    Console().print(table)
    first = rows[0][1].read / rows[0][2]
    print(f"documents in the database: {count}. Raw insert_many of the same {len(docs)} documents into the same server,")
    for label, rate in raw.items():
        print(f"  unique key and {label}: {rate:.0f} documents/s; first ingest at {first / rate:.2f}x that")

if __name__ == "__main__":
    main()

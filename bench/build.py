"""Per-stage throughput of the build chain on a fixed set, and the cost of a no-op rebuild at scale.

    PYTHONPATH=. python bench/build.py [--n 24] [--noop 10000,100000] [--steps 200]

Part 1 builds the first N oxides of the shipped MP-20 sample (every stage, real models, relaxation capped at
--steps) in a fresh embedded database and prints documents/s per stage.
Part 2 fills every stage's collection to each --noop size by copying those real documents under new ids (the
copies are consistent: each stage's timestamps follow its source's, as after a real build), then times `build all`
twice: the first finds the collections changed since the last build and checks every key and timestamp (the full
staleness check); the second finds nothing changed (the no-op a user sees after a build). Beside them: the raw
time to read every collection's keys and timestamps once (the floor of a full check), and the peak memory of the
build (this process and any workers; not the database server).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.relax import PeakRSS
from builders.chain import STAGES, TARGETS, BuildOptions, build
from registry.db.client import Registry
from registry.db.server import EmbeddedServer
from registry.db.stores import COLLECTIONS
from registry.io.ingest import Ingestor
from registry.io.readers import read_csv

SAMPLE = Path(__file__).resolve().parents[1] / "registry" / "data" / "sample" / "mp20"


def oxides(n: int):
    records = [r for f in sorted(SAMPLE.glob("*.csv")) for r in read_csv(f)]
    return [r for r in records if r.structure is not None and "O" in r.structure.composition
            and len(r.structure) <= 12][:n]


def replicate(reg: Registry, copies: int) -> None:
    """Copy every document of every collection until it holds `copies` times its originals, under new keys,
    keeping their timestamps."""
    for name in ("structures", *TARGETS.values()):
        coll = reg.collection(name)
        docs = list(coll.find({"registry_id": {"$not": {"$regex": "~"}}}, {"_id": 0}))
        if not docs:
            continue
        batch = []
        for k in range(max(1, coll.count_documents({}) // len(docs)), copies):
            for d in docs:
                c = dict(d)
                c["registry_id"] = f"{d['registry_id']}~{k}"
                if name in ("candidates", "funnel"):  # keyed by registry id, preset and ion
                    c[f"{name.removesuffix('s')}_id"] = f"{c['registry_id']}:{d['preset']}:{d['ion']}"
                if name == "validated":
                    c["members"] = [f"{m}~{k}" for m in d["members"]]
                batch.append(c)
            if len(batch) >= 5000:  # one command per batch: each costs ~40 ms on the embedded server
                coll.insert_many(batch, ordered=False)
                batch = []
        if batch:
            coll.insert_many(batch, ordered=False)
        assert coll.count_documents({}) == len(docs) * copies, name


def key_scan_seconds(reg: Registry) -> float:
    """Read every stage collection's keys and timestamps once: what a full staleness check cannot go below."""
    t = time.perf_counter()
    for name in ("structures", *TARGETS.values()):
        spec = COLLECTIONS[name]
        for _ in reg.collection(name).find({}, {spec.key: 1, "last_updated": 1, "sources_updated": 1, "_id": 0}):
            pass
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--noop", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 100_000])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    # every stage on every structure: the channel screen would hold back the dense oxides before relaxing
    options = BuildOptions(steps=args.steps, scope={}, channel_margin=float("inf"))
    console = Console()
    with tempfile.TemporaryDirectory() as home:
        server = EmbeddedServer(Path(home))
        try:
            reg = Registry(server.ensure_running(auth=False).uri + "bench")
            recs = oxides(args.n)
            Ingestor(reg).write(recs)
            rows = []
            for stage in STAGES:
                t = time.perf_counter()
                [report] = build(reg, stage, options, progress=False)
                rows.append((stage, report.processed, report.failed, time.perf_counter() - t))
            table = Table("stage", "documents", "failed", "seconds", "documents/s",
                          title=f"build chain on {len(recs)} MP-20 oxides (<= 12 sites, relax <= {args.steps} steps)")
            for stage, n, failed, dt in rows:
                table.add_row(stage, str(n), str(failed), f"{dt:.1f}", f"{n / dt:.2f}" if dt else "-")
            console.print(table)
            for size in args.noop:  # a row as soon as it is measured: the largest size takes long
                replicate(reg, max(1, size // max(1, len(recs))))
                floor = key_scan_seconds(reg)
                timings = []
                for _ in ("full check", "nothing changed"):
                    with PeakRSS(exclude=(server.status().pid,)) as mem:
                        t = time.perf_counter()
                        reports = build(reg, "all", options, progress=False)
                        timings.append((time.perf_counter() - t, sum(r.processed for r in reports), mem.peak))
                (full_s, full_n, full_mem), (quick_s, quick_n, quick_mem) = timings
                table = Table("structures", "key scan (floor) s", "full check s", "processed", "nothing changed s",
                              "processed", "peak MB", title="no-op `build all` (every stage filled with consistent copies)")
                table.add_row(str(reg.count()), f"{floor:.1f}", f"{full_s:.1f}", str(full_n), f"{quick_s:.1f}",
                              str(quick_n), f"{max(full_mem, quick_mem) / 2**20:.0f}")
                console.print(table)
        finally:
            server.stop()


if __name__ == "__main__":
    main()

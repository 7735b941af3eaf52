"""Per-stage throughput of the build chain on a fixed set, and the cost of a no-op rebuild over 10,000 documents.

    python bench/build.py [--n 24] [--noop 10000] [--steps 200]

Part 1 builds the first N oxides of the shipped MP-20 sample (every stage, real models, relaxation capped at
--steps) in a fresh embedded database and prints documents/s per stage.
Part 2 fills every stage's collection to --noop documents by copying those real documents under new ids (the
copies are consistent: each stage's timestamps follow its source's, as after a real build), then times a full
`build all` that should find nothing to do: the price of the incremental checks at that size.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from builders.chain import STAGES, TARGETS, BuildOptions, build
from builders.funnel import content_hash
from registry.db.client import Registry
from registry.db.server import EmbeddedServer
from registry.io.ingest import Ingestor
from registry.io.readers import read_csv

SAMPLE = Path(__file__).resolve().parents[1] / "registry" / "data" / "sample" / "mp20"


def oxides(n: int):
    records = [r for f in sorted(SAMPLE.glob("*.csv")) for r in read_csv(f)]
    return [r for r in records if r.structure is not None and "O" in r.structure.composition
            and len(r.structure) <= 12][:n]


def replicate(reg: Registry, copies: int) -> None:
    """Copy every document of every collection `copies` times under new keys, keeping their timestamps."""
    for name in ("structures", *TARGETS.values()):
        coll = reg.collection(name)
        docs = list(coll.find({}, {"_id": 0}))
        for k in range(1, copies if docs else 1):
            batch = []
            for d in docs:
                c = dict(d)
                c["registry_id"] = f"{d['registry_id']}~{k}"
                if name in ("candidates", "funnel"):  # keyed by registry id, preset and ion
                    c[f"{name.removesuffix('s')}_id"] = f"{c['registry_id']}:{d['preset']}:{d['ion']}"
                if name == "funnel":
                    c["content_hash"] = content_hash(c)
                if name == "validated":
                    c["members"] = [f"{m}~{k}" for m in d["members"]]
                batch.append(c)
            coll.insert_many(batch, ordered=False)
        assert coll.count_documents({}) == len(docs) * copies, name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--noop", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    # every stage on every structure: the channel screen would hold back the dense oxides before relaxing
    options = BuildOptions(steps=args.steps, scope={}, channel_margin=float("inf"))
    with tempfile.TemporaryDirectory() as home:
        server = EmbeddedServer(Path(home))
        try:
            reg = Registry(server.ensure_running().uri + "bench")
            recs = oxides(args.n)
            Ingestor(reg).write(recs)
            rows = []
            for stage in STAGES:
                t = time.perf_counter()
                [report] = build(reg, stage, options, progress=False)
                rows.append((stage, report.processed, report.failed, time.perf_counter() - t))
            copies = max(1, args.noop // max(1, len(recs)))
            replicate(reg, copies)
            n_docs = reg.count()
            t = time.perf_counter()
            reports = build(reg, "all", options, progress=False)
            noop_s = time.perf_counter() - t
        finally:
            server.stop()

    table = Table("stage", "documents", "failed", "seconds", "documents/s",
                  title=f"build chain on {len(recs)} MP-20 oxides (<= 12 sites, relax <= {args.steps} steps)")
    for stage, n, failed, dt in rows:
        table.add_row(stage, str(n), str(failed), f"{dt:.1f}", f"{n / dt:.2f}" if dt else "-")
    Console().print(table)
    processed = sum(r.processed for r in reports)
    print(f"no-op `build all` over {n_docs} structures (every stage filled): {noop_s:.1f} s, "
          f"{processed} documents processed")
    print("  per stage: " + ", ".join(f"{r.stage} {r.processed}" for r in reports))


if __name__ == "__main__":
    main()

"""Query latency and throughput under concurrent clients while a writer writes, and what each index is worth.

    python bench/load.py [--docs 10000] [--seconds 5] [--clients 1,4,16]

A fresh embedded server gets --docs structures (the shipped MP-20 sample ingested once, then copied under new
ids) and one candidate document per structure (preset, ion, passed and score drawn at random: the shape of the
ranked collection, not its values). N client threads then run the registry's main query shapes in turn for
--seconds while one writer thread upserts structures by key without pause (as ingest and the builders do), and
the table gives p50/p99 latency per query and total queries/s. The same runs follow with every secondary index
dropped (the unique keys stay: without them upserts would scan). Last, each index is dropped alone and its own
query shape timed with 4 clients (the value of that index); and 2,000 structures are read by key with one `$in`
and in chunks of 100 keys (`Registry.find_among`), the best 10 candidates as a range on `rank` and as equalities.
Every shape is measured at least twice per client however slow it is.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from math import ceil
from pathlib import Path

from pymongo import ASCENDING, ReplaceOne
from rich.console import Console
from rich.table import Table

from builders.rank import order_candidates
from registry.db.client import Registry
from registry.db.server import EmbeddedServer
from registry.db.stores import COLLECTIONS, IN_CHUNK
from registry.io.ingest import Ingestor
from registry.io.readers import read_csv

SAMPLE = Path(__file__).resolve().parents[1] / "registry" / "data" / "sample" / "mp20"


@dataclass(frozen=True)
class Shape:
    """One query the registry makes often, and the index that serves it."""

    name: str
    collection: str
    index: str
    run: Callable[[Registry, random.Random, dict], object]


def _sample_ids(reg: Registry) -> dict:
    structures = reg.collection("structures")
    ids = [d["registry_id"] for d in structures.find({}, {"registry_id": 1})]
    return {"ids": ids, "chemsys": structures.distinct("chemsys"), "formulas": structures.distinct("formula_pretty"),
            "cutoff": datetime.now(UTC) - timedelta(seconds=1)}


SHAPES = [
    Shape("key lookup (registry_id)", "structures", "registry_id",
          lambda reg, rng, s: reg.collection("structures").find_one({"registry_id": rng.choice(s["ids"])})),
    Shape("by element (elements: O), 20", "structures", "elements",
          lambda reg, rng, s: list(reg.collection("structures").find(
              {"elements": rng.choice(["O", "Mn", "Mg", "Ti", "V"])}, {"registry_id": 1}).limit(20))),
    Shape("by chemsys", "structures", "chemsys",
          lambda reg, rng, s: list(reg.collection("structures").find({"chemsys": rng.choice(s["chemsys"])},
                                                                      {"registry_id": 1}))),
    Shape("by formula", "structures", "formula_pretty",
          lambda reg, rng, s: list(reg.collection("structures").find({"formula_pretty": rng.choice(s["formulas"])},
                                                                      {"registry_id": 1}))),
    Shape("changed since (last_updated)", "structures", "last_updated",
          lambda reg, rng, s: list(reg.collection("structures").find({"last_updated": {"$gt": datetime.now(UTC)}},
                                                                      {"registry_id": 1}))),
    Shape("top 10 candidates (preset, ion)", "candidates", "rank",
          lambda reg, rng, s: reg.top_candidates("tunnel", rng.choice(["Mg", "Zn"]), 10,
                                                 fields=["registry_id", "score"])),
]


def fill(reg: Registry, n: int) -> None:
    """n structures (the MP-20 sample, copied under new ids) and a candidate per structure."""
    records = [r for f in sorted(SAMPLE.glob("*.csv")) for r in read_csv(f) if r.structure is not None]
    Ingestor(reg).write(records)
    structures = reg.collection("structures")
    base = list(structures.find({}, {"_id": 0}))
    copy = 1
    while structures.estimated_document_count() < n:
        batch = [{**d, "registry_id": f"{d['registry_id']}~{copy}"} for d in base]
        structures.insert_many(batch[: n - structures.estimated_document_count()])
        copy += 1
    rng = random.Random(0)
    candidates = [{"candidate_id": f"{d['registry_id']}:tunnel:{ion}", "registry_id": d["registry_id"],
                   "preset": "tunnel", "ion": ion, "passed": rng.random() < 0.05, "score": rng.random(),
                   "state": "successful", "last_updated": datetime.now(UTC)}
                  for d in structures.find({}, {"registry_id": 1}) for ion in ("Mg", "Zn")][:n]
    reg.collection("candidates").insert_many(candidates)
    reg.ensure_indexes(["structures", "candidates"])
    store = reg.store("candidates")
    store.connect()
    for ion in ("Mg", "Zn"):  # as the rank stage leaves them
        order_candidates(store, {"preset": "tunnel", "ion": ion})


def writer(reg: Registry, stop: threading.Event, counter: list[int]) -> None:
    """Upsert structures by key, one small batch after another: what ingest and the builders do."""
    structures = reg.collection("structures")
    docs = list(structures.find({}, {"_id": 0}).limit(50))
    while not stop.is_set():
        now = datetime.now(UTC)
        structures.bulk_write([ReplaceOne({"registry_id": d["registry_id"]}, {**d, "last_updated": now}, upsert=True)
                               for d in docs], ordered=False)
        counter[0] += len(docs)


def measure(reg: Registry, shapes: list[Shape], clients: int, seconds: float, sample: dict
            ) -> tuple[dict[str, list[float]], float, int]:
    """Latencies (s) per shape, queries/s over all clients, and documents the writer wrote."""
    latencies: dict[str, list[float]] = {s.name: [] for s in shapes}
    lock = threading.Lock()
    stop = threading.Event()
    written = [0]

    def client(seed: int) -> None:
        rng = random.Random(seed)
        own: dict[str, list[float]] = {s.name: [] for s in shapes}
        i = seed
        while not stop.is_set() or min(map(len, own.values())) < 2:  # every shape measured, however slow
            shape = shapes[i % len(shapes)]
            t = time.perf_counter()
            shape.run(reg, rng, sample)
            own[shape.name].append(time.perf_counter() - t)
            i += 1
        with lock:
            for name, values in own.items():
                latencies[name] += values

    threads = [threading.Thread(target=writer, args=(reg, stop, written))]
    threads += [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads[1:]:
        t.join()
    elapsed = time.perf_counter() - start
    threads[0].join()
    return latencies, sum(map(len, latencies.values())) / elapsed, written[0] / elapsed


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def ms(values: list[float], q: int) -> str:
    return f"{1000 * percentile(values, q):.1f}" if values else "-"


def drop_secondary(reg: Registry, names: list[str]) -> list[tuple[str, str]]:
    """Drop every index but _id and the unique key; return (collection, field) of what was dropped."""
    dropped = []
    for name in names:
        coll = reg.collection(name)
        for index in coll.list_indexes():
            fields = list(index["key"])
            if index["name"] != "_id_" and not index.get("unique"):
                coll.drop_index(index["name"])
                dropped.append((name, fields[0]))
    return dropped


def in_lists(reg: Registry, sample: dict, n: int = 2000) -> Table:
    """The same documents read two ways (no writer): by key, one `$in` of n keys and `Registry.find_among`'s chunks
    of IN_CHUNK keys; the best 10 candidates, as a range on `rank` and as the equalities `top_candidates` reads."""
    ids = random.Random(1).sample(sample["ids"], n)
    scope = {"preset": "tunnel", "ion": "Mg"}
    reads = [
        (f"{n} structures: one $in of {n} keys", 1,
         lambda: reg.find({"registry_id": {"$in": ids}}, fields=["registry_id"])),
        (f"{n} structures: find_among, {IN_CHUNK} keys per $in", ceil(n / IN_CHUNK),
         lambda: reg.find_among("registry_id", ids, fields=["registry_id"])),
        ("top 10: the range {rank: {$lte: 10}}", 1,
         lambda: reg.find({"rank": {"$lte": 10}, **scope}, collection="candidates")),
        ("top 10: top_candidates (rank in 1..10)", 1, lambda: reg.top_candidates("tunnel", "Mg", 10)),
    ]
    table = Table("read", "queries", "documents", "ms", title="one query shape, two ways (no writer)")
    for label, queries, read in reads:
        t = time.perf_counter()
        docs = read()
        table.add_row(label, str(queries), str(len(docs)), f"{1000 * (time.perf_counter() - t):.1f}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="1,4,16")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    console = Console(width=140)
    with tempfile.TemporaryDirectory() as home:
        server = EmbeddedServer(Path(home))
        try:
            reg = Registry(server.ensure_running(auth=False).uri + "load")
            t = time.perf_counter()
            fill(reg, args.docs)
            console.print(f"{reg.count()} structures and {reg.count(collection='candidates')} candidates loaded "
                          f"in {time.perf_counter() - t:.0f} s")
            sample = _sample_ids(reg)

            throughput = Table("indexes", "clients", "queries/s", "writer docs/s",
                               title=f"{args.docs} structures, one writer upserting, >= {args.seconds:.0f} s per row")
            latency = Table("indexes", "clients", "query", "p50 ms", "p99 ms", "queries",
                            title="latency per query shape (same runs)")
            for label in ("all", "keys only"):
                if label == "keys only":
                    drop_secondary(reg, ["structures", "candidates"])
                for n in counts:
                    lat, qps, writes = measure(reg, SHAPES, n, args.seconds, sample)
                    throughput.add_row(label, str(n), f"{qps:.1f}", f"{writes:.0f}")
                    for shape in SHAPES:
                        values = lat[shape.name]
                        latency.add_row(label, str(n), shape.name, ms(values, 50), ms(values, 99), str(len(values)))
            console.print(throughput)
            console.print(latency)

            per_index = Table("index", "query", "p50 ms with", "p50 ms without", "p99 ms with", "p99 ms without",
                              "p50 without / with", title="each index dropped alone, 4 clients, writer running")
            reg.ensure_indexes(["structures", "candidates"])
            for shape in SHAPES:
                if shape.index == COLLECTIONS[shape.collection].key:
                    continue  # the unique key: upserts need it, it is never dropped
                coll = reg.collection(shape.collection)
                with_index, _, _ = measure(reg, [shape], 4, args.seconds, sample)
                name = next(i["name"] for i in coll.list_indexes() if list(i["key"]) == [shape.index])
                coll.drop_index(name)
                without, _, _ = measure(reg, [shape], 4, args.seconds, sample)
                coll.create_index([(shape.index, ASCENDING)])
                a, b = with_index[shape.name], without[shape.name]
                per_index.add_row(f"{shape.collection}.{shape.index}", shape.name, ms(a, 50), ms(b, 50), ms(a, 99),
                                  ms(b, 99), f"{percentile(b, 50) / percentile(a, 50):.1f}")
            console.print(per_index)
            console.print(in_lists(reg, sample))
        finally:
            server.stop()


if __name__ == "__main__":
    main()

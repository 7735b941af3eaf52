"""The one base of every stage, on a toy stage: squares of numbers. What is out of date, what a failure leaves,
and what a distributed run with --force does."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from monty.json import MontyDecoder
from pymongo.collection import Collection

from builders.run import run_builder
from builders.stage import StageBuilder, content_hash
from schemas.stage import Provenance, StageDoc, parse_stage_doc

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Squares(StageBuilder):
    """numbers -> squares; a negative number fails; `offset` is a parameter that shapes the content."""

    stage = "squares"

    def __init__(self, numbers, squares, offset: int = 0, **kwargs: Any):
        self.numbers, self.squares, self.offset = numbers, squares, offset
        super().__init__(numbers, squares, **kwargs)

    def parameters(self) -> dict[str, Any]:
        return {"offset": self.offset}

    def process_group(self, item: dict) -> list[dict]:
        [doc] = item["docs"]
        if doc["x"] < 0:
            raise ValueError("no square of a negative number here")
        return [{"registry_id": doc["registry_id"], "square": doc["x"] ** 2 + self.offset,
                 "provenance": Provenance(builder="squares").model_dump()}]


def setup(registry, *values: int) -> None:
    registry.collection("numbers").insert_many([{"registry_id": f"n{i}", "x": x, "last_updated": T0}
                                                for i, x in enumerate(values)])


def run(registry, **kwargs):
    return run_builder(Squares(*setup_stores(registry), **kwargs), "squares", progress=False)


def setup_stores(registry):
    return registry.store("numbers", key="registry_id"), registry.store("squares", key="registry_id")


def squares(registry) -> dict[str, dict]:
    return {d["registry_id"]: d for d in registry.find(collection="squares")}


def test_only_what_changed_is_rebuilt_and_an_unchanged_rebuild_keeps_its_timestamp(registry):
    setup(registry, 2, 3)
    assert run(registry).processed == 2
    assert run(registry).processed == 0
    first = squares(registry)
    # n0 is touched but its content stays the same; n1 gets a new value (writers stamp the time they write)
    registry.collection("numbers").update_one({"registry_id": "n0"}, {"$set": {"last_updated": datetime.now(UTC)}})
    registry.collection("numbers").update_one({"registry_id": "n1"},
                                              {"$set": {"x": 4, "last_updated": datetime.now(UTC)}})
    report = run(registry)
    assert (report.processed, report.skipped) == (2, 0)
    now = squares(registry)
    assert now["n1"]["square"] == 16 and now["n1"]["last_updated"] > first["n1"]["last_updated"]
    # same content: last_updated stays, so nothing downstream is redone; sources_updated moves
    assert now["n0"]["last_updated"] == first["n0"]["last_updated"]
    assert now["n0"]["sources_updated"] > first["n0"]["sources_updated"]
    assert run(registry).processed == 0


def test_other_parameters_rebuild_everything(registry):
    setup(registry, 2, 3)
    run(registry)
    assert run(registry, offset=1).processed == 2
    assert squares(registry)["n0"]["square"] == 5
    assert run(registry, offset=1).processed == 0


def test_a_failure_is_a_document_of_the_envelope_schema_and_the_rest_goes_on(registry):
    setup(registry, 2, -1)
    report = run(registry)
    assert (report.processed, report.failed) == (2, 1)
    failed = squares(registry)["n1"]
    assert failed["state"] == "failed" and "negative" in failed["error"]
    assert isinstance(parse_stage_doc(StageDoc, failed), StageDoc)  # provenance, timestamps and reason included
    assert failed["provenance"]["builder"] == "squares"


def test_force_rebuilds_everything_in_every_distributed_chunk(registry):
    setup(registry, 1, 2, 3, 4)
    run(registry)
    manager = Squares(*setup_stores(registry), force=True)
    manager.connect()
    chunks = list(manager.prechunk(2))
    assert sum(len(c["query"]["registry_id"]["$in"]) for c in chunks) == 4  # maggma's manager hands these out
    processed = 0
    for chunk in chunks:  # as maggma's distributed workers rebuild the builder: as_dict() plus the chunk
        worker = MontyDecoder().process_decoded({**manager.as_dict(), **chunk})
        assert worker.force
        processed += run_builder(worker, "squares", progress=False).processed
    assert processed == 4


def test_the_content_hash_ignores_float_noise_but_not_a_change():
    """A relaxation batched with other structures differs in the last bits, a coordinate at 0 in its sign."""
    doc = {"registry_id": "a", "energy_per_atom": -7.123456789, "frac_coords": [0.0, 0.25]}
    noisy = {**doc, "energy_per_atom": -7.123456789000002, "frac_coords": [-1e-16, 0.25000000000001]}
    assert content_hash(doc) == content_hash(noisy)
    assert content_hash(doc) != content_hash({**doc, "energy_per_atom": -7.1235})


class Counted(Squares):
    """Squares that counts the items it has handed out when its first chunk is written."""

    pulled = 0
    pulled_at_first_write: int | None = None

    def get_items(self):
        for item in super().get_items():
            Counted.pulled += 1
            yield item

    def update_targets(self, items: list[dict]) -> None:
        if Counted.pulled_at_first_write is None:
            Counted.pulled_at_first_write = Counted.pulled
        super().update_targets(items)


@pytest.mark.parametrize("workers", [1, 2])
def test_items_stream_to_the_writer_a_chunk_at_a_time(registry, workers):
    """Memory holds a chunk of a stage's work, not all of it: 60 items, the first chunk of 10 written before
    more than a chunk and the pool's window were read."""
    setup(registry, *range(60))
    Counted.pulled, Counted.pulled_at_first_write = 0, None
    report = run_builder(Counted(*setup_stores(registry), chunk_size=10), "squares", workers=workers, progress=False)
    assert report.processed == 60 and Counted.pulled == 60
    assert Counted.pulled_at_first_write <= 10 + 2 * workers


def test_a_build_with_nothing_changed_reads_no_keys_until_something_does(registry, monkeypatch):
    """The build record: the next build asks each store for one changed document and compares counts; only a
    change (an update, a deletion) makes it read every key and timestamp."""
    setup(registry, 2, 3, 4)
    assert run(registry).processed == 3
    full_checks = []
    check = Squares.stale_groups
    monkeypatch.setattr(Squares, "stale_groups", lambda self: full_checks.append(1) or check(self))
    assert (run(registry).processed, len(full_checks)) == (0, 0)

    registry.collection("numbers").update_one({"registry_id": "n1"}, {"$set": {"x": 5, "last_updated":
                                                                                datetime.now(UTC)}})
    time.sleep(1.1)  # a build record keeps a second of margin before its start (writers' clocks)
    assert (run(registry).processed, len(full_checks)) == (1, 1)
    assert squares(registry)["n1"]["square"] == 25
    assert (run(registry).processed, len(full_checks)) == (0, 1)

    registry.collection("numbers").delete_one({"registry_id": "n2"})
    run(registry)
    assert len(full_checks) == 2 and set(squares(registry)) == {"n0", "n1"}


class Doubled(StageBuilder):
    """squares -> doubled: the second stage of a toy chain."""

    stage = "doubled"

    def process_group(self, item: dict) -> list[dict]:
        [doc] = item["docs"]
        return [{"registry_id": doc["registry_id"], "double": 2 * doc["square"],
                 "provenance": Provenance(builder="doubled").model_dump()}]


def chain(registry) -> None:
    """Both stages with one set of counts, as `builders.chain.build` runs them."""
    counts: dict[str, int] = {}
    numbers, squares_ = setup_stores(registry)
    for builder in (Squares(numbers, squares_), Doubled(squares_, registry.store("doubled", key="registry_id"))):
        builder.share_counts(counts)
        run_builder(builder, builder.stage, progress=False)


def test_a_chain_counts_each_collection_once_and_again_after_a_stage_wrote_it(registry, monkeypatch):
    """A count scans a collection on the embedded server: a chain takes one per collection (the one a stage
    wrote, after it wrote it), and a deletion upstream still reaches the end of the chain."""
    setup(registry, 2, 3)
    counted = []
    count = Collection.estimated_document_count
    monkeypatch.setattr(Collection, "estimated_document_count",
                        lambda self, **kw: counted.append(self.name) or count(self, **kw))
    chain(registry)
    assert sorted(counted) == ["doubled", "numbers", "squares"]
    counted.clear()
    chain(registry)  # nothing changed
    assert sorted(counted) == ["doubled", "numbers", "squares"]

    registry.collection("numbers").delete_one({"registry_id": "n1"})
    chain(registry)
    assert [d["registry_id"] for d in registry.find(collection="doubled")] == ["n0"]

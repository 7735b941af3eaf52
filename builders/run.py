"""Run a stage with progress and counts, in this process or across worker processes.

maggma's `Builder.run()` closes its stores and reports nothing; the CLI needs processed / failed / up-to-date
counts per stage. Workers are *spawned*, never forked (a forked torch, with its OpenMP pools and a loaded model,
can hang), and each receives the builder once, in the pool's initializer: models load lazily, once per process.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from maggma.core import Builder
from maggma.utils import grouper
from tqdm import tqdm


@dataclass
class StageReport:
    stage: str
    processed: int = 0
    failed: int = 0
    skipped: int = 0
    gated: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def count(self, doc: dict[str, Any]) -> None:
        self.processed += 1
        if doc.get("state") == "failed":
            self.failed += 1
            reason = " ".join(str(doc.get("error") or "unknown").split())  # whole: the CLI wraps it
            self.reasons[reason] = self.reasons.get(reason, 0) + 1


_WORKER_BUILDER: Builder | None = None


def _init_worker(builder: Builder, threads: int) -> None:
    global _WORKER_BUILDER
    import torch

    torch.set_num_threads(threads)
    _WORKER_BUILDER = builder
    builder.connect()


def _process(item: Any) -> Any:
    assert _WORKER_BUILDER is not None
    return _WORKER_BUILDER.process_item(item)


def run_builder(builder: Builder, stage: str, workers: int = 1, progress: bool = True) -> StageReport:
    """Connect, process every item the builder yields (over `workers` spawned processes, each with an equal share
    of the cores as torch threads), write in chunks, finalize; return the counts. Items stream: memory holds a
    chunk of them, not the stage's whole work."""
    report = StageReport(stage)
    builder.connect()
    try:
        items = iter(builder.get_items())
        first = next(items, None)  # get_items knows how many items there are once it yields the first
        items = itertools.chain([first], items) if first is not None else iter(())
        bar = tqdm(total=builder.total or 0, desc=stage, unit=" items", disable=not progress or None)
        if workers > 1 and (builder.total or 0) > 1:
            threads = max(1, len(os.sched_getaffinity(0)) // workers)
            with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(builder, threads)) as pool:
                # a window of items at a time: the pool's feeder would otherwise read every item into memory
                window = max(2, 2 * workers)
                outputs = (out for batch in grouper(items, window) for out in pool.imap(_process, batch))
                _write(builder, outputs, report, bar)
        else:
            _write(builder, (builder.process_item(i) for i in items), report, bar)
        bar.close()
        report.skipped = getattr(builder, "skipped", 0)
        report.gated = getattr(builder, "gated", 0)
        builder.finalize()
    finally:
        for store in builder.sources + builder.targets:
            try:
                store.close()
            except Exception:  # noqa: S110 - closing an already-closed store is harmless
                pass
    return report


def _write(builder: Builder, outputs: Iterable[Any], report: StageReport, bar: tqdm) -> None:
    for chunk in grouper(outputs, builder.chunk_size):
        for output in chunk:
            for doc in output["docs"]:  # a stage's output: {"groups", "docs"} (builders/stage.py)
                report.count(doc)
        builder.update_targets(list(chunk))
        bar.update(len(chunk))

"""Run maggma builders with progress and counts, serially or across worker processes.

maggma's `Builder.run()` closes its stores and reports nothing; the CLI needs processed / failed / skipped
counts per stage. Worker processes receive the builder once (pool initializer), not once per item, so models
load once per process.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterable, Iterator
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
            reason = str(doc.get("error") or "unknown")[:80]
            self.reasons[reason] = self.reasons.get(reason, 0) + 1


_WORKER_BUILDER: Builder | None = None


def _init_worker(builder: Builder, threads: int) -> None:
    global _WORKER_BUILDER
    import torch

    torch.set_num_threads(threads)
    _WORKER_BUILDER = builder
    for store in builder.sources + builder.targets:  # a MongoClient must not cross a fork
        store.connect(force_reset=True)


def _process(item: Any) -> Any:
    assert _WORKER_BUILDER is not None
    return _WORKER_BUILDER.process_item(item)


def _documents(output: Any) -> Iterator[dict]:
    """Stages return {"groups", "docs"} (builders/stage.py); older builders a list or one document."""
    if isinstance(output, list):
        yield from output
    elif isinstance(output, dict) and "docs" in output and ("group" in output or "groups" in output):
        yield from output["docs"]
    elif isinstance(output, dict):
        yield output


def run_builder(builder: Builder, stage: str, workers: int = 1, progress: bool = True,
                threads_per_worker: int = 1) -> StageReport:
    """Connect, process every item the builder yields, write in chunks, finalize; return the counts."""
    report = StageReport(stage)
    builder.connect()
    try:
        items: Iterable[Any] = builder.get_items()
        items = list(items)
        total = len(items)
        skipped = getattr(builder, "skipped", None)
        bar = tqdm(total=total, desc=stage, unit=" items", disable=not progress or None)
        if workers > 1 and total > 1:
            ctx = mp.get_context("fork")
            with ctx.Pool(workers, initializer=_init_worker, initargs=(builder, threads_per_worker)) as pool:
                outputs = pool.imap(_process, items, chunksize=1)
                _write(builder, outputs, report, bar)
        else:
            _write(builder, (builder.process_item(i) for i in items), report, bar)
        bar.close()
        report.skipped += skipped or 0
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
        report.skipped += sum(1 for c in chunk if c is None)  # the builder found nothing to change
        chunk = [c for c in chunk if c is not None]
        for output in chunk:
            for doc in _documents(output):
                report.count(doc)
        builder.update_targets(chunk)
        bar.update(len(chunk))

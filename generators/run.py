"""Run any `Generator` into the registry and record the run."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from generators.base import Generator
from registry.io.ingest import Ingestor, IngestReport
from registry.io.records import Record
from schemas.base import to_mongo
from schemas.generation import GenerationRunDoc

if TYPE_CHECKING:
    from registry.db.client import Registry


def run_generator(registry: Registry, generator: Generator,
                  progress: Callable[[Iterable[Record]], Iterable[Record]] = lambda it: it,
                  metrics: Callable[[], dict[str, Any]] | None = None) -> tuple[GenerationRunDoc, IngestReport]:
    """Write every record the generator yields (rejects included) and upsert its `generation_runs` document.

    `metrics` is called after generation, for figures the generator computed on the way (e.g. validity).
    """
    run_id = generator.run_id()
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    report = Ingestor(registry, stage=generator.name).write(progress(generator.generate(run_id)))
    registry.ensure_indexes(["generation_runs"])
    doc = GenerationRunDoc(
        run_id=run_id, generator=generator.name, version=generator.version, parameters=generator.parameters(),
        produced=report.read, parsed=report.ingested + report.updated + report.unchanged,
        rejected=report.rejected, reject_reasons=report.reasons,
        filtered=getattr(generator, "filtered", 0), metrics=metrics() if metrics else {},
        seconds=time.perf_counter() - t0, started=started,
    )
    registry.collection("generation_runs").replace_one({"run_id": run_id}, to_mongo(doc), upsert=True)
    return doc, report

"""The registry's collections: their keys and indexes, and maggma stores on them by URI."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from maggma.core import Store
from maggma.stores import MongoStore
from pydantic import BaseModel

from registry.db.config import redact
from schemas.candidate import CandidateDoc
from schemas.dft import DftComparisonDoc, DftDoc
from schemas.funnel import FunnelDoc
from schemas.generation import GenerationRunDoc
from schemas.insertion import InsertionDoc
from schemas.optimade import PREFIX, OptimadeStructureDoc
from schemas.predicted import PredictedDoc
from schemas.reference import ReferenceEntryDoc, ReferenceSetDoc
from schemas.refined import RefinedDoc
from schemas.relaxed import RelaxedDoc
from schemas.screened import ScreenedDoc
from schemas.stability import StabilityDoc
from schemas.structure import RejectDoc, StructureDoc
from schemas.tunnels import TunnelsDoc
from schemas.validated import ValidatedDoc


@dataclass(frozen=True)
class Collection:
    """A collection's unique key, its documents' schema, and the fields queries filter and sort on."""

    name: str
    key: str
    schema: type[BaseModel] | None = None
    indexes: tuple[str, ...] = field(default_factory=tuple)


COLLECTIONS: dict[str, Collection] = {
    c.name: c
    for c in (
        # each index costs every insert (bench/ingest.py); none on fields of a few values (origin.kind, nelements):
        # the embedded server would serve a filter naming one first through it, and scan most of the collection
        Collection("structures", "registry_id", StructureDoc, ("last_updated", "elements", "formula_pretty", "chemsys",
                                                               "origin.source", "origin.run_id")),
        Collection("rejects", "reject_id", RejectDoc, ("last_updated", "stage", "source")),
        Collection("references", "reference_id", ReferenceEntryDoc, ("chemsys", "formula_pretty",
                                                                            "reference_set", "last_updated")),
        Collection("reference_sets", "name", ReferenceSetDoc),
        Collection("generation_runs", "run_id", GenerationRunDoc, ("last_updated", "generator")),
        Collection("validated", "registry_id", ValidatedDoc, ("last_updated", "state", "valid", "formula_pretty", "chemsys",
                                                "members", "novel")),
        Collection("screened", "registry_id", ScreenedDoc, ("last_updated", "state", "static_e_above_hull")),
        Collection("relaxed", "registry_id", RelaxedDoc, ("last_updated", "state", "formula_pretty", "chemsys")),
        Collection("refined", "registry_id", RefinedDoc, ("last_updated", "state", "refined", "tier_one_e_above_hull")),
        Collection("predicted", "registry_id", PredictedDoc, ("last_updated", "state", "chemsys")),
        Collection("stability", "registry_id", StabilityDoc, ("last_updated", "state", "chemsys")),
        Collection("tunnels", "registry_id", TunnelsDoc, ("last_updated", "state")),
        Collection("insertion", "registry_id", InsertionDoc, ("last_updated", "state")),
        # the best N of a preset and ion are the ranks 1..N, served by the rank index (Registry.top_candidates)
        Collection("candidates", "candidate_id", CandidateDoc, ("rank", "registry_id", "last_updated", "state",
                                                               "preset", "ion", "passed", "score")),
        Collection("funnel", "funnel_id", FunnelDoc, ("registry_id", "preset", "ion", "left_at",
                                                       "pending", "last_updated")),
        Collection("dft", "dft_id", DftDoc, ("last_updated", "registry_id", "state")),
        Collection("dft_comparison", "registry_id", DftComparisonDoc, ("last_updated", "state")),
        # served by `registry serve`: `id` for /structures/<id>, `state` to count what is not served, and what
        # filters most often name
        Collection("optimade_structures", "registry_id", OptimadeStructureDoc, (
            "id", "state", "last_updated", "elements", "nelements", "chemical_formula_reduced", f"_{PREFIX}_sets")),
    )
}


RANKED = 1000  # candidates per preset and ion that carry a `rank` (builders/rank.py), so that few are rewritten
IN_CHUNK = 100  # keys per `$in`: SecantusDB answers 2,000 keys in 4.0 s, 20 chunks of 100 in 0.37 s (docs/database.md)


def among(field: str, values: Iterable[Any], scope: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`scope` narrowed to the documents whose `field` is one of `values`, that condition first.

    The embedded SecantusDB serves a filter of several fields through the index of the first field that has one;
    MongoDB's planner weighs them all. With a scope's `state` first, reading 100 of 2,111 validated documents by
    registry_id took 0.65 s instead of 0.026 s, and every chunk of an incremental build paid it.
    """
    clause = {field: {"$in": list(values)}}
    scope = dict(scope or {})
    if field in scope:  # the scope's own condition on the field must hold as well
        return {"$and": [clause, scope]}
    return {**clause, **scope}


def query_among(store: Store, field: str, values: Iterable[Any], scope: Mapping[str, Any] | None = None,
                properties: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """`store.query` of the documents whose `field` is one of `values` (within `scope`), `IN_CHUNK` keys per query."""
    values = list(values)
    for i in range(0, len(values), IN_CHUNK):
        yield from store.query(criteria=among(field, values[i:i + IN_CHUNK], scope), properties=properties)


class RegistryStore(MongoStore):
    """A MongoStore whose printable name never shows credentials (maggma's shows the full URI)."""

    @property
    def name(self) -> str:
        return f"{redact(self.uri or '')}{self.database}/{self.collection_name}"


def make_store(uri: str, database: str, collection: str, timeout_ms: int = 5000, **kwargs) -> RegistryStore:
    """A maggma store on one registry collection, keyed and timestamped as the catalogue says."""
    spec = COLLECTIONS.get(collection, Collection(collection, kwargs.pop("key", "registry_id")))
    kwargs.setdefault("last_updated_field", "last_updated")
    return RegistryStore.from_uri(
        uri, collection_name=spec.name, database=database, key=spec.key,
        mongoclient_kwargs={"serverSelectionTimeoutMS": timeout_ms, "retryWrites": True, **kwargs.pop("mongoclient_kwargs", {})},
        **kwargs,
    )


def naive_utc(dt: datetime) -> datetime:
    """Mongo returns naive UTC datetimes unless the client is tz-aware; compare them the same way."""
    return dt.replace(tzinfo=None) if dt.tzinfo else dt

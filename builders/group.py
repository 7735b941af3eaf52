"""A stage that rebuilds whole groups (a reduced formula, a chemical system) when any member changed.

maggma's GroupBuilder does this too, but its `prechunk` is broken for distributed runs; here prechunk splits
the stale group keys, so `mrun` manager/worker mode hands each worker whole groups.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from datetime import datetime
from math import ceil
from typing import Any

from maggma.core import Builder, Store
from maggma.utils import grouper

from registry.stores import among, naive_utc


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


class GroupStageBuilder(Builder):
    """Source documents are grouped by `group_field`; each target document lists the source keys it was made
    from in `members_field` and the group's newest source timestamp in `sources_updated`. A group is stale when
    its set of source keys differs from the targets' or a source is newer than `sources_updated`."""

    group_field: str
    members_field: str

    def __init__(self, source: Store, target: Store, query: dict | None = None, force: bool = False,
                 chunk_size: int = 20, extra_sources: list[Store] | None = None):
        self.source = source
        self.target = target
        self.query = query or {}
        self.force = force
        self.total: int | None = None
        self.n_groups = 0
        self.skipped = 0
        self.source_groups: dict[str, tuple[set[str], datetime]] = {}
        super().__init__(sources=[source, *(extra_sources or [])], targets=[target], chunk_size=chunk_size)

    def ensure_indexes(self) -> None:
        for store, fields in ((self.source, (self.source.key, self.group_field, "last_updated")),
                              (self.target, (self.target.key, self.group_field, "last_updated"))):
            for f in fields:
                store.ensure_index(f)

    def _source_groups(self) -> dict[str, tuple[set[str], datetime]]:
        pipeline = [{"$match": self.query}] if self.query else []
        pipeline.append({"$group": {"_id": f"${self.group_field}", "keys": {"$push": f"${self.source.key}"},
                                    "lu": {"$max": "$last_updated"}}})
        return {g["_id"]: (set(g["keys"]), g["lu"]) for g in self.source._collection.aggregate(pipeline)
                if g["_id"] is not None}

    def _target_groups(self) -> dict[str, tuple[set[str], datetime]]:
        """Target groups within the query's group restriction (a prechunk names its groups)."""
        match = {self.group_field: self.query[self.group_field]} if self.group_field in self.query else {}
        out: dict[str, tuple[set[str], datetime]] = {}
        for d in self.target.query(criteria=match, properties=[self.group_field, self.members_field, "sources_updated"]):
            keys, lu = out.get(d[self.group_field], (set(), None))
            keys |= set(_as_list(d.get(self.members_field) or []))
            su = d.get("sources_updated")
            out[d[self.group_field]] = (keys, max(filter(None, (lu, su)), default=None))
        return out

    def stale_groups(self) -> list[str]:
        """Group keys to rebuild, sorted so runs and prechunks are reproducible."""
        sources = self.source_groups = self._source_groups()
        self.n_groups = len(sources)
        if self.force:
            return sorted(sources)
        targets = self._target_groups()
        stale = {g for g, (keys, lu) in sources.items()
                 if g not in targets or targets[g][0] != keys or targets[g][1] is None
                 or naive_utc(lu) > naive_utc(targets[g][1])}
        # groups whose sources all disappeared: rebuilding them deletes their targets (only when the query
        # restricts nothing but groups; otherwise a missing source may just be out of scope)
        if set(self.query) <= {self.group_field}:
            stale |= {g for g in targets if g not in sources}
        return sorted(stale)

    def prechunk(self, number_splits: int) -> Iterator[dict]:
        self.ensure_indexes()
        groups = self.stale_groups()
        for split in grouper(groups, max(1, ceil(len(groups) / number_splits))):
            yield {"query": among(self.group_field, split, self.query)}

    def get_items(self) -> Iterator[dict]:
        self.ensure_indexes()
        groups = self.stale_groups()
        self.total = len(groups)
        self.skipped = self.n_groups - len(groups)
        self.logger.info(f"{type(self).__name__}: {len(groups)} stale groups")
        for chunk in grouper(groups, self.chunk_size):
            docs: dict[str, list[dict]] = {g: [] for g in chunk}
            for d in self.source.query(criteria=among(self.group_field, chunk, self.query)):
                docs[d[self.group_field]].append(d)
            for g in chunk:
                yield {"group": g, "docs": docs[g], **self.group_context(g, docs[g])}

    def group_context(self, group: str, docs: list[dict]) -> dict[str, Any]:
        """Extra data a group needs beyond its own documents (e.g. hull references)."""
        return {}

    @abstractmethod
    def process_group(self, item: dict) -> list[dict]:
        """All target documents of one group; a failure in one document is a failed document, not an exception."""

    def process_item(self, item: dict) -> dict:
        return {"group": item["group"], "docs": self.process_group(item)}

    def update_targets(self, items: list[dict]) -> None:
        """Replace each group's documents: upsert the new ones, delete those the group no longer has.

        One read and at most one delete per chunk, not a delete per group: on the embedded server each command
        costs ~40 ms, and a delete per group was three quarters of the validate stage's time."""
        key = self.target.key
        docs = [d for item in items for d in item["docs"]]
        if docs:
            self.target.update(docs)
        keep = {d[key] for d in docs}
        groups = [item["group"] for item in items]
        stale = [d[key] for d in self.target.query(criteria={self.group_field: {"$in": groups}}, properties=[key])
                 if d[key] not in keep]
        if stale:
            self.target.remove_docs({key: {"$in": stale}})


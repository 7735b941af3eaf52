"""maggma's MapBuilder, plus what the one-to-one stages here need: `force`, counts of skipped documents, and
optional batches (models are far cheaper per structure when they see many at once)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from maggma.builders import MapBuilder
from maggma.core import Store
from maggma.utils import grouper

from registry.stores import among


class StageMapBuilder(MapBuilder):
    """Incremental by maggma's rule (a source newer than its target is redone); `force` redoes everything in
    scope; `skipped` counts the documents in scope that were up to date.

    With `batch_size`, items are lists of source documents handed to `process_batch`; a batch is also the unit
    `mrun` distributes. Without it, maggma's one-document `unary_function` path is used.

    A `gate` (another stage's store and a filter on it) admits only the source documents whose key has a gate
    document matching the filter, in the order of the gate's `order_by` field: the funnel's way of spending a
    costly stage only on what can still pass. `gated` counts the documents held back.
    """

    def __init__(self, *args: Any, force: bool = False, batch_size: int | None = None, gate: Store | None = None,
                 gate_query: dict | None = None, order_by: str | None = None, **kwargs: Any):
        self.force = force
        self.batch_size = batch_size
        self.gate = gate
        self.gate_query = gate_query or {}
        self.order_by = order_by
        self.skipped = 0
        self.gated = 0
        super().__init__(*args, **kwargs)
        # MSONable rebuilds subclasses from their own arguments plus self.kwargs: keep ours there too, or a
        # distributed worker would run without its gate.
        self.kwargs.update(force=force, batch_size=batch_size, gate=gate, gate_query=self.gate_query,
                           order_by=order_by)
        if gate is not None:
            self.sources.append(gate)

    def _admit(self, items: list[dict]) -> list[dict]:
        key = self.source.key
        fields = [key, self.order_by] if self.order_by else [key]
        admitted: dict[str, Any] = {}
        for chunk in grouper([i[key] for i in items], 10_000):
            for d in self.gate.query(criteria=among(key, chunk, self.gate_query), properties=fields):
                admitted[d[key]] = d.get(self.order_by) if self.order_by else None
        kept = [i for i in items if i[key] in admitted]
        self.gated = len(items) - len(kept)
        if self.order_by:
            kept.sort(key=lambda i: (admitted[i[key]] is None, admitted[i[key]] or 0.0, i[key]))
        return kept

    def get_items(self) -> Iterator[Any]:
        in_scope = self.source.count(self.query)
        if not self.force:
            items = list(super().get_items())
        else:
            self.ensure_indexes()
            fields = list({*self.projection, self.source.key, self.source.last_updated_field}) if self.projection else None
            items = list(self.source.query(criteria=self.query, properties=fields))
        if self.gate is not None:
            items = self._admit(items)
        self.skipped = in_scope - len(items) - self.gated
        if self.batch_size:
            batches = [list(b) for b in grouper(items, self.batch_size)]
            self.total = len(batches)
            yield from batches
        else:
            self.total = len(items)
            yield from items

    def process_batch(self, items: list[dict]) -> list[dict]:
        """Target documents for a batch, in order; one bad document must not fail the others."""
        raise NotImplementedError(f"{type(self).__name__} has no batch path")

    def process_item(self, item: Any) -> Any:
        return self.process_batch(item) if isinstance(item, list) else super().process_item(item)

    def unary_function(self, item: dict) -> dict:
        return self.process_batch([item])[0]

    def update_targets(self, items: list[Any]) -> None:
        docs = [d for item in items for d in (item if isinstance(item, list) else [item])]
        super().update_targets(docs)

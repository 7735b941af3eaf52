"""maggma's MapBuilder, plus what every one-to-one stage here needs: `force`, and counts of skipped documents."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from maggma.builders import MapBuilder


class StageMapBuilder(MapBuilder):
    """Incremental by maggma's rule (a source newer than its target is redone); `force` redoes everything in
    scope. `skipped` counts the documents in scope that were up to date."""

    def __init__(self, *args: Any, force: bool = False, **kwargs: Any):
        self.force = force
        self.skipped = 0
        super().__init__(*args, **kwargs)

    def get_items(self) -> Iterator[dict]:
        in_scope = self.source.count(self.query)
        if not self.force:
            items = list(super().get_items())
        else:
            self.ensure_indexes()
            projection = list({*self.projection, self.source.key, self.source.last_updated_field}) if self.projection else None
            items = list(self.source.query(criteria=self.query, properties=projection))
        self.total = len(items)
        self.skipped = in_scope - len(items)
        yield from items

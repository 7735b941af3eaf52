"""tunnels: relaxed -> tunnels. Zeo++ free spheres and bond-valence percolation for each working ion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from maggma.core import Store
from pymatgen.core import Structure

from builders.map import StageMapBuilder
from registry.channels import DEFAULT_IONS, analyze_channels
from schemas.base import to_mongo
from schemas.stage import Provenance, State
from schemas.tunnels import TunnelsDoc

SOURCE_FIELDS = ["registry_id", "formula_pretty", "chemsys", "structure"]


class TunnelsBuilder(StageMapBuilder):
    def __init__(self, relaxed: Store, tunnels: Store, query: dict | None = None,
                 ions: Sequence[str] = DEFAULT_IONS, **kwargs: Any):
        self.relaxed = relaxed
        self.tunnels = tunnels
        self.ions = list(ions)
        kwargs.setdefault("chunk_size", 20)
        super().__init__(relaxed, tunnels, query={"state": State.successful.value, **(query or {})},
                         projection=SOURCE_FIELDS, store_process_time=False, **kwargs)

    def unary_function(self, item: dict) -> dict:
        report = analyze_channels(Structure.from_dict(item["structure"]), self.ions)
        if report.error:
            raise ValueError(f"channel analysis failed: {report.error}")
        axis = report.channel_axis
        doc = TunnelsDoc(
            registry_id=item["registry_id"], last_updated=item["last_updated"],
            provenance=Provenance(builder="tunnels", model="zeo++ (pyzeo) + BVSE (BVlain)",
                                  parameters={"ions": self.ions, **report.settings.model_dump()}),
            formula_pretty=item["formula_pretty"], chemsys=item["chemsys"], has_1d_channel=report.has_1d_channel,
            channel_axis=(axis.label or "[{} {} {}]".format(*axis.uvw)) if axis else None,
            free_sphere=report.zeopp.df if report.zeopp else None,
            admits={ion: ch.admits for ion, ch in report.ions.items()}, report=report,
        )
        return to_mongo(doc)

"""tunnels: relaxed -> tunnels. Zeo++ free spheres and bond-valence percolation for each working ion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from maggma.core import Store
from pymatgen.core import Structure

from builders.stage import StageBuilder
from registry.science.channels import DEFAULT_IONS, analyze_channels, thresholds
from schemas.base import to_mongo
from schemas.stage import Provenance, State
from schemas.tunnels import TunnelsDoc

SOURCE_FIELDS = ["registry_id", "formula_pretty", "chemsys", "structure", "last_updated"]


class TunnelsBuilder(StageBuilder):
    stage = "tunnels"

    def __init__(self, relaxed: Store, tunnels: Store, query: dict | None = None,
                 ions: Sequence[str] = DEFAULT_IONS, **kwargs: Any):
        self.relaxed = relaxed
        self.tunnels = tunnels
        self.ions = list(ions)
        kwargs.setdefault("chunk_size", 20)
        super().__init__(relaxed, tunnels, query={"state": State.successful.value, **(query or {})},
                         projection=SOURCE_FIELDS, **kwargs)

    def parameters(self) -> dict[str, Any]:
        """Other ions, or recalibrated thresholds, redo every analysis."""
        return {"ions": self.ions, "calibration": thresholds()[1]}

    def process_group(self, item: dict) -> list[dict]:
        [source] = item["docs"]
        report = analyze_channels(Structure.from_dict(source["structure"]), self.ions)
        if report.error:
            raise ValueError(f"channel analysis failed: {report.error}")
        axis = report.channel_axis
        doc = TunnelsDoc(
            registry_id=source["registry_id"],
            provenance=Provenance(builder="tunnels", model="zeo++ (pyzeo) + BVSE (BVlain)",
                                  parameters={"ions": self.ions, **report.settings.model_dump()}),
            formula_pretty=source["formula_pretty"], chemsys=source["chemsys"], has_1d_channel=report.has_1d_channel,
            channel_axis=(axis.label or "[{} {} {}]".format(*axis.uvw)) if axis else None,
            free_sphere=report.zeopp.df if report.zeopp else None,
            admits={ion: ch.admits for ion, ch in report.ions.items()},
            dimensionality={ion: ch.dimensionality for ion, ch in report.ions.items()}, report=report,
        )
        return [to_mongo(doc)]

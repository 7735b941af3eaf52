"""The tunnels stage's document: open-channel geometry of a relaxed structure for each working ion."""

from __future__ import annotations

from pydantic import Field

from registry.channels import ChannelReport
from schemas.stage import StageDoc


class TunnelsDoc(StageDoc):
    formula_pretty: str
    chemsys: str
    has_1d_channel: bool | None = Field(description="Some working ion percolates in 1-D only")
    channel_axis: str | None = Field(description="a, b, c, or [u v w] of the relaxed cell")
    free_sphere: float | None = Field(description="Zeo++ largest free sphere Df (Å) of the structure as given")
    admits: dict[str, bool | None] = Field(description="Working ion -> whether an open channel admits it")
    report: ChannelReport

"""Where each structure left the funnel, and why: one document per validated structure, preset and ion."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.stage import StageDoc

Stage = Literal["validate", "prefilter", "screen", "relax", "predict", "stability", "tunnels", "rank"]


class FunnelDoc(StageDoc):
    funnel_id: str = Field(description="registry_id:preset:ion")
    registry_id: str
    preset: str
    ion: str
    formula_pretty: str
    origin_kind: str
    reached: Stage = Field(description="The last stage this structure got through")
    left_at: Stage | None = Field(description="Where it stopped; None for a candidate that passed every criterion")
    pending: bool = Field(description="It stopped only because a stage has not run on it yet (not a verdict)")
    reason: str | None = None
    energy_source: Literal["relaxed", "refined"] | None = Field(None, description="Whose energy its E_form and E_hull "
                                                                             "came from: the relaxation's potential or "
                                                                             "the refine stage's; None before predict")
    warnings: list[str] = Field(default_factory=list, description="What the stages flagged on the way, e.g. a "
                                                                  "relaxation that changed the volume by +63%")

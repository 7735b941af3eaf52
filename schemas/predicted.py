"""The predict stage's document: ML properties of a relaxed structure, each with the model that made it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from schemas.stage import StageDoc


class Prediction(BaseModel):
    value: float | None
    model: str
    version: str
    method: str = Field(description="How the value was obtained, in words")
    training_data: str | None = Field(None, description="What the model was trained (or referenced) on")
    heldout_mae: float | None = Field(None, description="The model's MAE on data it never saw, where known (its card)")
    error: str | None = Field(None, description="Why there is no value")


class PredictedDoc(StageDoc):
    formula_pretty: str
    chemsys: str
    elements: list[str]
    nsites: int
    energy_per_atom: float = Field(description="Energy per atom E_form is computed from (MP2020-compatible): the "
                                               "second tier's where there is one, else the relaxation's")
    energy_source: Literal["relaxed", "refined"] = Field(
        "relaxed", description="Whose energy E_form (and stability's E_hull) uses: the relaxation's potential (tier "
                               "one) or the refine stage's (tier two, builders/refine.py); "
                               "predictions['formation_energy_per_atom'] names the model, and a refined document "
                               "keeps the tier-one value as predictions['tier_one_formation_energy_per_atom']")
    formation_energy_per_atom: float | None
    band_gap: float | None
    converged: bool = Field(description="Whether the relaxation behind these values converged")
    predictions: dict[str, Prediction]

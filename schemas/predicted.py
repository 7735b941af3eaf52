"""The predict stage's document: ML properties of a relaxed structure, each with the model that made it."""

from __future__ import annotations

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
    energy_per_atom: float = Field(description="Relaxed energy per atom from the potential (MP2020-compatible)")
    formation_energy_per_atom: float | None
    band_gap: float | None
    converged: bool = Field(description="Whether the relaxation behind these values converged")
    predictions: dict[str, Prediction]

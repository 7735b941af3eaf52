"""predict: relaxed -> predicted. Formation energy from the potential's energy, band gap from a matgl model.

The formation energy uses the same MP elemental references Matbench Discovery uses, so CHGNet's MP2020-compatible
energies give formation energies comparable with Materials Project's. It comes from the second tier's energy where
the refine stage computed one with the build's `--refine-potential` (builders/refine.py), else from the relaxation's;
`energy_source` says which, and the tier-one value is kept beside it with its model. The band gap comes from the registry's
composition model (`registry.science.bandgap`, trained by `registry train bandgap` on MP's PBE gaps) unless the
user names another folder; it loads lazily, once per process, and must pass its own check (textbook insulators,
TiO2 and metals where they belong). Each value records its model, training data and held-out error.
"""

from __future__ import annotations

import math
from typing import Any

from maggma.core import Store
from pymatgen.core import Composition, Structure

from builders.stage import StageBuilder
from registry.science.references import REFERENCE_NAME, formation_energy_per_atom
from schemas.base import to_mongo
from schemas.predicted import PredictedDoc, Prediction
from schemas.stage import Provenance, State

SOURCE_FIELDS = ["registry_id", "formula_pretty", "chemsys", "elements", "nsites", "structure", "energy_per_atom",
                 "converged", "potential"]


class PredictBuilder(StageBuilder):
    stage = "predict"

    def __init__(self, relaxed: Store, predicted: Store, refined: Store | None = None,
                 refine_potential: str | None = None, query: dict | None = None,
                 bandgap_model: str | None = None, batch_size: int = 64, **kwargs: Any):
        """`bandgap_model`: a model folder (default: the shipped one). `refined` and `refine_potential`: the
        second tier's energies, used where that potential computed one (None: the relaxation's only)."""
        self.relaxed = relaxed
        self.predicted = predicted
        self.refined = refined if refine_potential else None
        self.refine_potential = refine_potential if refined is not None else None
        self.bandgap_model = bandgap_model
        super().__init__(relaxed, predicted, inputs=[self.refined] if self.refined is not None else [],
                         query={"state": State.successful.value, **(query or {})},
                         projection=SOURCE_FIELDS, batch_size=batch_size, **kwargs)

    def input_scope(self, store: Store) -> dict:
        """The refined documents with an energy from this build's second tier."""
        return {"state": State.successful.value, "refined": True, "potential.spec": self.refine_potential}

    def parameters(self) -> dict[str, Any]:
        return {"bandgap_model": str(self.bandgap_model or "shipped"), "refine_potential": self.refine_potential}

    def process_groups(self, groups: list[dict]) -> list[dict]:
        """One band-gap model call for the whole batch; a document that cannot be predicted fails alone."""
        from registry.science.bandgap import CompositionBandGapModel

        items = [g["docs"][0] for g in groups]
        # a second-tier energy of an earlier relaxation (refine has not run since) is not this structure's
        refined = [r if r is not None and r["tier_one_energy_per_atom"] == d["energy_per_atom"] else None
                   for d, r in ((g["docs"][0], g["inputs"].get("refined")) for g in groups)]
        gap_model = CompositionBandGapModel.load(self.bandgap_model)
        gaps = gap_model.predict_with_reasons([Structure.from_dict(d["structure"]) for d in items])
        provenance = Provenance(builder="predict", model=gap_model.name, model_version=gap_model.version,
                                parameters={"bandgap_model": str(self.bandgap_model or "shipped"),
                                            "refine_potential": self.refine_potential, "references": REFERENCE_NAME})
        out = []
        for item, tier_two, gap in zip(items, refined, gaps, strict=True):
            try:
                out.append(self._doc(item, tier_two, gap.band_gap, gap.reason, gap_model, provenance))
            except Exception as exc:  # a NaN energy or an element without a reference: this document fails alone
                out.append(self.failed(item, str(exc)))
        return out

    def _doc(self, item: dict, tier_two: dict | None, gap: float | None, gap_error: str | None, gap_model: Any,
             provenance: Provenance) -> dict:
        """E_form from the second tier's energy when there is one, the relaxation's kept beside it."""
        energy = item["energy_per_atom"]
        if energy is None or not math.isfinite(energy):
            raise ValueError(f"relaxed energy is not a finite number ({energy})")
        composition = Composition(item["formula_pretty"])
        potential = item["potential"]
        relaxed = Prediction(value=formation_energy_per_atom(composition, energy), model=potential["name"],
                             version=potential["version"],
                             method=f"relaxed energy minus composition-weighted {REFERENCE_NAME}")
        predictions = {"formation_energy_per_atom": relaxed}
        if tier_two is not None:
            energy = tier_two["energy_per_atom"]
            predictions = {"formation_energy_per_atom": Prediction(
                value=formation_energy_per_atom(composition, energy), model=tier_two["potential"]["name"],
                version=tier_two["potential"]["version"],
                method=f"static energy of the {potential['name']}-relaxed structure minus composition-weighted "
                       f"{REFERENCE_NAME}"), "tier_one_formation_energy_per_atom": relaxed}
        e_form = predictions["formation_energy_per_atom"].value
        predictions |= {
            "band_gap": Prediction(value=gap, model=gap_model.name, version=gap_model.version,
                                   method="composition model (attention over elements) trained on MP PBE gaps",
                                   training_data=gap_model.training_data, heldout_mae=gap_model.heldout_mae,
                                   error=gap_error),
        }
        return to_mongo(PredictedDoc(
            registry_id=item["registry_id"], provenance=provenance,
            formula_pretty=item["formula_pretty"], chemsys=item["chemsys"], elements=item["elements"],
            nsites=item["nsites"], energy_per_atom=energy, formation_energy_per_atom=e_form, band_gap=gap,
            converged=item["converged"], energy_source="refined" if tier_two is not None else "relaxed",
            predictions=predictions,
        ))

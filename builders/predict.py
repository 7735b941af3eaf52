"""predict: relaxed -> predicted. Formation energy from the potential's energy, band gap from a matgl model.

The formation energy uses the same MP elemental references Matbench Discovery uses, so CHGNet's MP2020-compatible
energies give formation energies comparable with Materials Project's. The band-gap model is the registry's own
(trained by `registry train bandgap`) unless the user names another folder.
"""

from __future__ import annotations

import math
from typing import Any

from maggma.core import Store

from builders.map import StageMapBuilder
from pymatgen.core import Composition, Structure

from registry.references import REFERENCE_NAME, formation_energy_per_atom
from schemas.base import to_mongo
from schemas.predicted import PredictedDoc, Prediction
from schemas.stage import Provenance, State

SOURCE_FIELDS = ["registry_id", "formula_pretty", "chemsys", "elements", "nsites", "structure", "energy_per_atom",
                 "converged", "potential"]


class PredictBuilder(StageMapBuilder):
    def __init__(self, relaxed: Store, predicted: Store, query: dict | None = None,
                 bandgap_model: str | None = None, **kwargs: Any):
        """`bandgap_model`: a model folder (default: the shipped one)."""
        self.relaxed = relaxed
        self.predicted = predicted
        self.bandgap_model = bandgap_model
        kwargs.setdefault("chunk_size", 50)
        super().__init__(relaxed, predicted, query={"state": State.successful.value, **(query or {})},
                         projection=SOURCE_FIELDS, store_process_time=False, **kwargs)

    def _bandgap(self):
        from registry.bandgap import load_bandgap_model

        return load_bandgap_model(self.bandgap_model)

    def unary_function(self, item: dict) -> dict:
        comp = Composition(item["formula_pretty"])
        potential = item["potential"]
        energy = item["energy_per_atom"]
        if energy is None or not math.isfinite(energy):
            raise ValueError(f"relaxed energy is not a finite number ({energy})")
        e_form = formation_energy_per_atom(comp, energy)
        if not math.isfinite(e_form):
            raise ValueError(f"formation energy is not a finite number ({e_form})")
        predictions = {"formation_energy_per_atom": Prediction(
            value=e_form, model=potential["name"], version=potential["version"],
            method=f"relaxed energy minus composition-weighted {REFERENCE_NAME}")}
        gap_model = self._bandgap()
        gap, gap_error = gap_model.predict_one(Structure.from_dict(item["structure"]))
        predictions["band_gap"] = Prediction(value=gap, model=gap_model.name, version=gap_model.version,
                                             method="matgl graph network on the relaxed structure", error=gap_error)
        doc = PredictedDoc(
            registry_id=item["registry_id"], last_updated=item["last_updated"],
            provenance=Provenance(builder="predict", parameters={"bandgap_model": gap_model.name}),
            formula_pretty=item["formula_pretty"], chemsys=item["chemsys"], elements=item["elements"],
            nsites=item["nsites"], energy_per_atom=energy, formation_energy_per_atom=e_form, band_gap=gap,
            converged=item["converged"], predictions=predictions,
        )
        return to_mongo(doc)

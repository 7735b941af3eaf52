"""relax: validated -> relaxed, with a universal potential that passed the model check.

Items are batches of validated structures, so a worker advances a whole batch in lockstep: one batched forward
pass per optimizer step (ASE's BFGS by default; `registry.science.relaxation`), recorded in the provenance. The
model loads lazily, once per process, never in `__init__`: builders are pickled to their workers.
"""

from __future__ import annotations

from typing import Any

from maggma.core import Store
from pymatgen.core import Structure

from builders.stage import StageBuilder
from registry.science.relaxation import RelaxResult, RelaxSettings, relax_batch
from schemas.base import to_mongo
from schemas.relaxed import PotentialInfo, RelaxedDoc
from schemas.stage import Provenance, State

SOURCE_FIELDS = ["registry_id", "formula_pretty", "chemsys", "elements", "nsites", "structure", "structure_updated"]


class RelaxBuilder(StageBuilder):
    """Relaxes every valid, successfully validated structure (optionally narrowed by `query`).

    The validated store must use `structure_updated` as its last_updated field: a structure is re-relaxed when
    its representative structure changed, not when another duplicate joined its group.
    """

    stage = "relax"

    def __init__(self, validated: Store, relaxed: Store, query: dict | None = None, potential: str = "chgnet",
                 device: str = "cpu", fmax: float = 0.1, steps: int = 500, batch_size: int = 8,
                 force: bool = False, **kwargs: Any):
        self.validated = validated
        self.relaxed = relaxed
        self.potential = potential
        self.device = device
        self.fmax = fmax
        self.steps = steps
        scope = {"valid": True, "state": State.successful.value, **(query or {})}
        kwargs.setdefault("chunk_size", 1)
        super().__init__(validated, relaxed, query=scope, projection=SOURCE_FIELDS, force=force,
                         batch_size=batch_size, **kwargs)

    def parameters(self) -> dict[str, Any]:
        """Another potential redoes every relaxation; other convergence settings keep what is done."""
        return {"potential": self.potential}

    def settings(self) -> RelaxSettings:
        return RelaxSettings(fmax=self.fmax, steps=self.steps)

    def process_groups(self, groups: list[dict]) -> list[dict]:
        """A batch is relaxed in lockstep: one batched forward pass per optimizer step."""
        from registry.science.potentials import checked_potential

        item = [g["docs"][0] for g in groups]
        potential, info = checked_potential(self.potential, self.device)  # ModelCheckError: nothing written
        provenance = Provenance(builder="relax", model=potential.name, model_version=potential.version,
                                parameters={"fmax": self.fmax, "steps": self.steps, "potential": self.potential,
                                            "optimizer": self.settings().optimizer,
                                            "cell_filter": "ase.filters.FrechetCellFilter"})
        structures = [Structure.from_dict(d["structure"]) for d in item]
        results = relax_batch(structures, potential, self.settings(), batch_size=self.batch_size)
        return [self._doc(d, s, r, info, provenance) for d, s, r in zip(item, structures, results, strict=True)]

    def _doc(self, source: dict, structure: Structure, result: RelaxResult, info: PotentialInfo,
             provenance: Provenance) -> dict:
        ok = result.status in ("converged", "unconverged")
        doc = RelaxedDoc(
            registry_id=source["registry_id"], state=State.successful if ok else State.failed,
            error=None if ok else f"relaxation {result.status}: {result.reason}",
            provenance=provenance, formula_pretty=source["formula_pretty"], chemsys=source["chemsys"],
            elements=source["elements"], nsites=source["nsites"], input_structure=structure,
            structure=result.structure if ok else None, status=result.status, converged=result.converged,
            initial_energy_per_atom=result.initial_energy_per_atom,
            energy_per_atom=result.final_energy_per_atom if ok else None, steps=result.steps,
            max_force=result.max_force, volume_change=result.volume_change, rmsd=result.rmsd,
            warnings=result.warnings, relaxation_sane=not result.warnings if ok else None,
            fmax=self.fmax, max_steps=self.steps, potential=info,
        )
        return to_mongo(doc)

"""refine: relaxed -> refined. The second tier: an accurate potential's energy for what is still in the running.

The fast potential (tier one, `--potential`) does what must touch every structure: the static screen and the
relaxation. The accurate one (tier two, `--refine-potential`) takes a static energy of the relaxed structure, and
only where the tier-one E_hull against the reference hull is within a cut (the preset's E_hull limit plus
`--refine-margin`; none when exhaustive or the preset has no limit): its cost scales with the survivors, not the
samples. predict computes E_form from the refined energy where there is one, so stability's E_hull, the gates
after it and rank use it too; the predicted and stability documents say which energy they used (`energy_source`).

Why a static energy: on bench/potentials.py's MP oxides, the second tier's static energy on the first tier's
relaxed structure is within a few meV/atom of its own relaxed minimum (docs/potentials.md), far inside its error
against MP, at a fraction of a relaxation's cost.

Why the cut is computed here rather than read from stability: stability comes after predict, which reads this
stage, so a gate on stability would need the chain to run twice.

What is redone (builders/stage.py's rule, and one addition): a refined document is rebuilt when its relaxed
structure changed, the reference hull of its system changed (its tier-one E_hull may have moved across the cut),
or the refine potential changed. The cut is not a parameter, as the relax stage's gate is not: a document left
unrefined under a lower cut is taken again when a build's cut now admits it (`stale_groups`); one refined under a
higher cut keeps its energy. Every relaxed structure gets a document, refined or not, so a rebuild with nothing
new does nothing.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from maggma.core import Store
from pymatgen.core import Composition, Structure

from builders.stage import StageBuilder
from registry.db.known import KnownCompounds
from registry.science.references import formation_energy_per_atom
from schemas.base import to_mongo
from schemas.refined import RefinedDoc
from schemas.relaxed import PotentialInfo
from schemas.stage import Provenance, State

SOURCE_FIELDS = ["registry_id", "formula_pretty", "chemsys", "structure", "energy_per_atom"]


class RefineBuilder(StageBuilder):
    stage = "refine"
    dependency_field = "chemsys"

    def __init__(self, relaxed: Store, refined: Store, references: Store, reference_sets: Store, structures: Store,
                 potential: str = "sevenn:7net-0", device: str = "cpu", max_e_above_hull: float | None = None,
                 query: dict | None = None, batch_size: int = 16, **kwargs: Any):
        """`max_e_above_hull`: the cut on the tier-one E_hull (eV/atom); None refines every relaxed structure.
        `references`, `reference_sets` and `structures` supply the reference hull (`registry.db.known`)."""
        self.relaxed, self.refined = relaxed, refined
        self.references, self.reference_sets, self.structures = references, reference_sets, structures
        self.known = KnownCompounds(references, reference_sets, structures)
        self.potential, self.device = potential, device
        self.max_e_above_hull = max_e_above_hull
        scope = {"state": State.successful.value, "energy_per_atom": {"$type": "number"}, **(query or {})}
        super().__init__(relaxed, refined, query=scope, reads=[references, reference_sets, structures],
                         projection=SOURCE_FIELDS, batch_size=batch_size, **kwargs)

    def parameters(self) -> dict[str, Any]:
        """Another second-tier potential redoes every document; the cut does not (see the module docstring)."""
        return {"potential": self.potential}

    def selection(self) -> dict[str, Any]:
        """A wider cut takes what an earlier build left unrefined."""
        return {"max_e_above_hull": self.max_e_above_hull}

    def dependency_time(self, chemsys: str) -> datetime | None:
        return self.known.updated(chemsys)

    def stale_groups(self) -> list[str]:
        """The base rule's groups, and the documents left unrefined that this build's cut now admits."""
        stale = set(super().stale_groups())
        admitted: dict[str, Any] = {"state": State.successful.value, "refined": False}
        if self.max_e_above_hull is not None:
            admitted["tier_one_e_above_hull"] = {"$lte": self.max_e_above_hull}
        if self.group_field in self.query:  # a prechunk's split: only its own groups
            admitted = {"$and": [admitted, {self.group_field: self.query[self.group_field]}]}
        taken = {d[self.group_field] for d in self.target.query(criteria=admitted, properties=[self.group_field])
                 if d[self.group_field] in self.source_groups} - stale
        self.skipped -= len(taken)  # counted as up to date by the base rule: one document per structure
        return sorted(stale | taken)

    def process_groups(self, groups: list[dict]) -> list[dict]:
        """The tier-one E_hull of each; one batched static energy for those within the cut."""
        items = [g["docs"][0] for g in groups]
        out: dict[str, dict] = {}
        admitted: list[tuple[dict, float]] = []
        for item in items:
            try:
                e_form = formation_energy_per_atom(Composition(item["formula_pretty"]), item["energy_per_atom"])
                e_hull = self.known.hull(item["chemsys"]).evaluate(item["formula_pretty"], e_form).e_above_hull
            except Exception as exc:  # no reference for an element: predict and stability will say the same
                out[item["registry_id"]] = self.failed(item, f"tier-one E_hull failed: {exc}")
                continue
            if self.max_e_above_hull is None or e_hull <= self.max_e_above_hull:
                admitted.append((item, e_hull))
            else:
                out[item["registry_id"]] = self._doc(item, e_hull, reason=(
                    f"tier-one E_hull {e_hull:.3f} eV/atom is above the cut {self.max_e_above_hull:.3f}"))
        if admitted:
            out |= self._refine(admitted)
        return [out[d["registry_id"]] for d in items]

    def _refine(self, admitted: list[tuple[dict, float]]) -> dict[str, dict]:
        from registry.science.potentials import checked_potential

        potential, info = checked_potential(self.potential, self.device)  # ModelCheckError: the stage stops
        structures = [Structure.from_dict(item["structure"]) for item, _ in admitted]
        energies = potential.energy_per_atom_each(structures)  # one structure breaking the batch fails alone
        out = {}
        for (item, e_hull), energy in zip(admitted, energies, strict=True):
            if isinstance(energy, Exception) or not math.isfinite(energy):
                out[item["registry_id"]] = self.failed(item, f"{potential.name} static energy failed: {energy}")
            else:
                out[item["registry_id"]] = self._doc(item, e_hull, energy=energy, info=info)
        return out

    def _doc(self, item: dict, e_hull: float, energy: float | None = None, info: PotentialInfo | None = None,
             reason: str | None = None) -> dict:
        parameters = {"potential": self.potential, "max_e_above_hull": self.max_e_above_hull}
        provenance = Provenance(builder="refine", model=info.name if info else None,
                                model_version=info.version if info else None, parameters=parameters)
        return to_mongo(RefinedDoc(
            registry_id=item["registry_id"], provenance=provenance, formula_pretty=item["formula_pretty"],
            chemsys=item["chemsys"], refined=energy is not None, tier_one_energy_per_atom=item["energy_per_atom"],
            tier_one_e_above_hull=e_hull, energy_per_atom=energy,
            formation_energy_per_atom=None if energy is None else formation_energy_per_atom(
                Composition(item["formula_pretty"]), energy),
            potential=info, reason=reason))


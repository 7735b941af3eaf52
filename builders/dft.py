"""dft: dft (+ relaxed, predicted, stability, structures) -> dft_comparison. The registry's ML values judged
against DFT, one document per registry id.

Each DFT entry is corrected with MP2020 (as Materials Project's own energies are), its formation energy taken
against the MP elemental references and its E_hull against the same reference hull the ML stability stage uses,
so every difference is the model's, not the bookkeeping's. Of several calculations for one structure, a static
run is preferred over a relaxation (MP's order), then the lowest corrected energy.

A registry id is rebuilt (builders/stage.py's rule) when its DFT documents change, when its ML documents (relaxed,
predicted, stability) change, or when the known compounds of its chemical system change.
"""

from __future__ import annotations

import warnings
from datetime import datetime
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from maggma.core import Store
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

from builders.stage import StageBuilder
from registry.db.known import KnownCompounds
from registry.io.decoding import decode
from registry.science.hull import reference_query
from registry.science.references import REFERENCE_NAME, formation_energy_per_atom
from schemas.base import to_mongo
from schemas.dft import Deltas, DftComparisonDoc, DftEnergies, KnownPolymorph, MlValues
from schemas.stage import Provenance, State

if TYPE_CHECKING:
    from pymatgen.entries.computed_entries import ComputedEntry


KIND_ORDER = {"static": 0, "relax": 1, "unknown": 2}
ML_STAGES = ("relaxed", "predicted", "stability")


class DftBuilder(StageBuilder):
    stage = "dft"
    group_field = "registry_id"
    members_field = "dft_ids"
    dependency_field = "chemsys"

    def __init__(self, dft: Store, relaxed: Store, predicted: Store, stability: Store, references: Store,
                 reference_sets: Store, structures: Store, comparison: Store, e_hull_threshold: float = 0.1,
                 check_potcar: bool = True, query: dict | None = None, **kwargs: Any):
        """`e_hull_threshold`: DFT E_hull (eV/atom) at or below which a structure counts as validated.
        `check_potcar`: MP2020's check that the POTCARs are MPRelaxSet's (off only for foreign data)."""
        self.dft = dft
        self.relaxed, self.predicted, self.stability = relaxed, predicted, stability
        self.references, self.reference_sets, self.structures = references, reference_sets, structures
        self.known = KnownCompounds(references, reference_sets, structures)
        self.comparison = comparison
        self.e_hull_threshold = e_hull_threshold
        self.check_potcar = check_potcar
        scope = {"registry_id": {"$type": "string"}, **(query or {})}
        super().__init__(dft, comparison, query=scope, inputs=[relaxed, predicted, stability],
                         reads=[references, reference_sets, structures], **kwargs)

    def parameters(self) -> dict[str, Any]:
        return {"e_hull_threshold": self.e_hull_threshold, "check_potcar": self.check_potcar}

    def dependency_time(self, chemsys: str | None) -> datetime | None:
        return self.known.updated(chemsys) if chemsys else None

    def context(self, groups: list[dict]) -> None:
        """Each registry id's structure document and the mined compounds of its system (known polymorphs)."""
        for g in groups:
            registry = self.structures.query_one(criteria={"registry_id": g["group"]},
                                                 properties=["registry_id", "formula_pretty", "chemsys", "structure"])
            chemsys = (registry or {}).get("chemsys") or next((d["chemsys"] for d in g["docs"] if d.get("chemsys")),
                                                              None)
            g["registry"] = registry
            g["references"] = list(self.structures.query(
                criteria=reference_query(chemsys),
                properties=["registry_id", "formula_pretty", "chemsys", "reference.formation_energy_per_atom",
                            "origin.source_id"])) if chemsys else []

    def process_group(self, item: dict) -> list[dict]:
        docs = item["docs"]
        if not docs:  # every calculation of this id was removed or relinked: drop its comparison
            return []
        rid, registry, refs = item["group"], item["registry"] or {}, item["references"]
        ml = {k: v for k, v in item["inputs"].items() if v and v.get("state", "successful") == State.successful.value}
        base: dict[str, Any] = {
            "registry_id": rid, "dft_ids": sorted(d["dft_id"] for d in docs),
            "formula_pretty": registry.get("formula_pretty"), "chemsys": registry.get("chemsys"),
            "e_hull_threshold": self.e_hull_threshold,
            "provenance": Provenance(builder="dft", parameters={
                "compatibility": "MaterialsProject2020Compatibility", "check_potcar": self.check_potcar,
                "references": REFERENCE_NAME,
                "e_hull_threshold": self.e_hull_threshold, "pymatgen": version("pymatgen")}),
        }
        usable = [d for d in docs if d.get("state") == State.successful.value and d.get("entry")]
        if not usable:
            why = "; ".join(sorted({str(d.get("error")) for d in docs}))[:300]
            return [self._failed(base, f"no successful DFT calculation ({len(docs)} failed: {why})")]
        corrected, rejected = self._corrected(usable)
        if not corrected:
            return [self._failed(base, "MP2020 compatibility rejects every calculation: " + "; ".join(rejected))]
        chosen, entry = min(corrected, key=lambda de: (KIND_ORDER.get(de[0].get("calc_kind"), 2),
                                                       de[1].energy_per_atom))
        formula = entry.composition.reduced_formula
        if registry.get("formula_pretty") not in (None, formula):
            return [self._failed(base, f"the calculation is {formula} but {rid} is {registry['formula_pretty']}")]
        try:
            return [self._compare(base, chosen, entry, [d for d, _ in corrected], ml, registry, refs)]
        except Exception as exc:  # a degenerate hull, an element without a reference: this id fails alone
            return [self._failed(base, f"comparison failed: {type(exc).__name__}: {exc}")]

    def _corrected(self, docs: list[dict]) -> tuple[list[tuple[dict, ComputedEntry]], list[str]]:
        """(doc, MP2020-corrected entry) for the compatible calculations; reasons for the others."""
        from pymatgen.analysis.compatibility import MaterialsProject2020Compatibility

        compat = MaterialsProject2020Compatibility(check_potcar=self.check_potcar)
        out, rejected = [], []
        for doc in docs:
            try:
                entry = decode(doc["entry"])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    compat.process_entry(entry, on_error="raise")
            except KeyError as exc:
                rejected.append(f"{doc['dft_id']}: the entry lacks {exc} (MP2020 checks POTCARs)")
                continue
            except Exception as exc:  # CompatibilityError: wrong run type, POTCAR or U value
                rejected.append(f"{doc['dft_id']}: {str(exc).split(' for {')[0][:200]}")
                continue
            out.append((doc, entry))
        return out, rejected

    def _compare(self, base: dict, chosen: dict, entry: ComputedEntry, compatible: list[dict], ml: dict[str, dict],
                 registry: dict, refs: list[dict]) -> dict:
        comp = entry.composition
        formula = comp.reduced_formula
        chemsys = "-".join(sorted(e.symbol for e in comp.elements))
        e_form = formation_energy_per_atom(comp, entry.energy_per_atom)
        hull = self.known.hull(chemsys)
        on_hull = hull.evaluate(formula, e_form)
        n = comp.num_atoms
        gap_doc = min((d for d in compatible if d.get("band_gap") is not None),
                      key=lambda d: KIND_ORDER.get(d.get("calc_kind"), 2), default=None)
        dft = DftEnergies(
            energy_per_atom_uncorrected=entry.uncorrected_energy_per_atom, correction_per_atom=entry.correction / n,
            energy_per_atom=entry.energy_per_atom, adjustments={a.name: a.value for a in entry.energy_adjustments},
            formation_energy_per_atom=e_form, e_above_hull=on_hull.e_above_hull,
            decomposition=on_hull.decomposition, band_gap=gap_doc["band_gap"] if gap_doc else None,
        )
        predicted, stability, relaxed = ml.get("predicted", {}), ml.get("stability", {}), ml.get("relaxed", {})
        mlv = MlValues(formation_energy_per_atom=predicted.get("formation_energy_per_atom"),
                       e_above_hull=stability.get("e_above_hull"), band_gap=predicted.get("band_gap"),
                       potential=(relaxed.get("potential") or {}).get("name")) if ml else None
        delta = Deltas(**{q: getattr(mlv, q) - getattr(dft, q) for q in Deltas.model_fields
                          if mlv is not None and getattr(mlv, q) is not None and getattr(dft, q) is not None})

        reference = relaxed.get("structure") or registry.get("structure")
        dft_structure = getattr(entry, "structure", None)
        rmsd = volume_change = None
        if reference and dft_structure is not None:
            ml_structure = Structure.from_dict(reference)
            match = StructureMatcher().get_rms_dist(ml_structure, dft_structure)
            rmsd = float(match[0]) if match else None
            volume_change = (dft_structure.volume / len(dft_structure)) / (ml_structure.volume / len(ml_structure)) - 1
        retained = None if dft_structure is None or not reference else rmsd is not None
        validated, reasons = self._verdict(on_hull.e_above_hull, retained, rmsd, "relaxed" in ml)

        known = [r for r in refs if r["formula_pretty"] == formula and r["registry_id"] != base["registry_id"]]
        best = min(known, key=lambda r: r["reference"]["formation_energy_per_atom"], default=None)
        polymorph = KnownPolymorph(
            registry_id=best["registry_id"], source_id=best["origin"]["source_id"],
            formation_energy_per_atom=best["reference"]["formation_energy_per_atom"],
            dft_minus_known=e_form - best["reference"]["formation_energy_per_atom"]) if best else None
        same_system = sum(1 for e in hull.references if e.composition.chemical_system == chemsys)
        return to_mongo(DftComparisonDoc(
            **{**base, "formula_pretty": formula, "chemsys": chemsys}, dft_id=chosen["dft_id"],
            functional=chosen.get("functional"), calc_kind=chosen.get("calc_kind"), dft=dft, ml=mlv, delta=delta,
            rmsd=rmsd, structure_retained=retained, volume_change=volume_change, dft_validated=validated,
            validation=reasons, known_polymorph=polymorph, n_references=hull.n_references,
            thin_hull=same_system == 0,
            reference_sets=list(hull.basis.reference_sets), hull_complete=hull.complete,
        ))

    def _verdict(self, e_hull: float, retained: bool | None, rmsd: float | None,
                 ml_relaxed: bool) -> tuple[bool, list[str]]:
        """Validated: DFT puts it within the threshold of the hull and keeps the ML-relaxed structure."""
        stable = e_hull <= self.e_hull_threshold
        reasons = [f"DFT E_hull {e_hull:.3f} eV/atom {'<=' if stable else '>'} {self.e_hull_threshold}"]
        against = "ML-relaxed" if ml_relaxed else "registry (no ML relaxation)"
        if retained is None:
            reasons.append("no structure to compare (the DFT result or the registry lacks one)")
        elif retained:
            reasons.append(f"DFT keeps the {against} structure (RMSD {rmsd:.3f})")
        else:
            reasons.append(f"the DFT relaxation left the {against} structure (no StructureMatcher match)")
        return stable and bool(retained), reasons

    @staticmethod
    def _failed(base: dict, reason: str) -> dict:
        return to_mongo(DftComparisonDoc(**base, state=State.failed, error=reason, dft_validated=False,
                                         validation=[reason]))


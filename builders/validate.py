"""validate: structures -> validated. Validity as CDVAE defines it, model coverage, and deduplication.

Structures are grouped by reduced formula and matched with pymatgen's StructureMatcher inside each group, so
deduplication is near-linear in the number of structures instead of all-pairs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from maggma.core import Store
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition, Element, Structure

from builders.stage import StageBuilder
from registry.db.known import KnownCompounds
from registry.science.validity import composition_validity, structure_problem
from schemas.base import to_mongo
from schemas.stage import Provenance
from schemas.validated import Member, ValidatedDoc, ValidityChecks

# CHGNet 0.3.0 (the default potential) embeds elements up to Pu (Z = 94).
DEFAULT_COVERED = tuple(Element.from_Z(z).symbol for z in range(1, 95))
STRUCTURE_FIELDS = ["registry_id", "formula_pretty", "chemsys", "elements", "nsites", "structure", "origin",
                    "last_updated"]


class ValidateBuilder(StageBuilder):
    stage = "validate"
    group_field = "formula_pretty"
    members_field = "members"
    dependency_field = "formula_pretty"  # whether a formula is known depends on the reference sets

    def __init__(self, structures: Store, references: Store, reference_sets: Store, validated: Store,
                 query: dict | None = None,
                 covered_elements: tuple[str, ...] = DEFAULT_COVERED,
                 volume_per_atom: tuple[float, float] = (2.0, 100.0),
                 matcher: dict[str, Any] | None = None, **kwargs: Any):
        """`covered_elements`: what the models in use know; `volume_per_atom`: the sane range in Å^3;
        `matcher`: StructureMatcher arguments (pymatgen's defaults otherwise)."""
        self.structures, self.references, self.reference_sets = structures, references, reference_sets
        self.known = KnownCompounds(references, reference_sets, structures)
        self.validated = validated
        self.covered_elements = tuple(covered_elements)
        self.volume_per_atom = tuple(volume_per_atom)
        self.matcher = dict(matcher or {})
        super().__init__(structures, validated, query=query, reads=[references, reference_sets],
                         projection=STRUCTURE_FIELDS, **kwargs)

    def dependency_time(self, formula: str) -> datetime | None:
        return self.known.sets_updated

    def parameters(self) -> dict[str, Any]:
        return {"volume_per_atom": list(self.volume_per_atom), "matcher": self.matcher,
                "covered_elements": len(self.covered_elements)}

    def checks(self, structure: Structure, kind: str) -> tuple[ValidityChecks, list[str]]:
        """Each check and the reasons it fails. Known (mined) structures are not failed on SMACT: real
        mixed-valence compounds such as Fe3O4 fail it, and it exists to judge generated compositions."""
        problem = structure_problem(structure)
        comp = Composition(structure.composition.formula)
        comp_ok = composition_validity(comp)
        vpa = structure.volume / len(structure) if len(structure) else None
        lo, hi = self.volume_per_atom
        vol_ok = vpa is not None and lo <= vpa <= hi
        uncovered = sorted({e.symbol for e in comp.elements} - set(self.covered_elements))
        reasons = []
        if problem:
            reasons.append(f"structure invalid: {problem}")
        if not comp_ok and kind != "mined":
            reasons.append(f"composition invalid: {comp.reduced_formula} is not charge-balanced with "
                           "electronegativity-ordered oxidation states (SMACT)")
        if not vol_ok:
            reasons.append(f"volume per atom {vpa:.2f} Å^3 outside [{lo}, {hi}]" if vpa else "no volume")
        if uncovered:
            reasons.append(f"elements not covered by the models in use: {', '.join(uncovered)}")
        return ValidityChecks(composition_valid=comp_ok, structure_valid=problem is None, volume_per_atom=vpa,
                              volume_ok=vol_ok, uncovered_elements=uncovered), reasons

    def process_group(self, item: dict) -> list[dict]:
        docs = sorted(item["docs"], key=lambda d: (_kind(d) != "mined", d["registry_id"]))
        if not docs:
            return []
        provenance = Provenance(builder="validate", parameters=self.parameters())
        known = any(_kind(d) == "mined" for d in docs) or item["group"] in self.known.reference_formulas
        valid, out = [], []
        for d in docs:
            try:
                structure = Structure.from_dict(d["structure"])
                checks, reasons = self.checks(structure, d["origin"]["kind"])
            except Exception as exc:  # a document that cannot even be read back fails alone
                out.append(self.failed(d, f"unreadable structure document: {type(exc).__name__}: {exc}"))
                continue
            if reasons:
                out.append(self._doc([d], [structure], checks, reasons, provenance, known))
            else:
                valid.append((d, structure, checks))
        if valid:
            by_object = {id(s): (d, s, c) for d, s, c in valid}  # group_structures returns the input objects
            for cluster in StructureMatcher(**self.matcher).group_structures([s for _, s, _ in valid]):
                members = [by_object[id(s)] for s in cluster]
                members.sort(key=lambda m: (m[0]["origin"]["kind"] != "mined", m[0]["registry_id"]))
                out.append(self._doc([m[0] for m in members], [m[1] for m in members], members[0][2], [],
                                     provenance, known))
        return out

    def _doc(self, docs: list[dict], structures: list[Structure], checks: ValidityChecks, reasons: list[str],
             provenance: Provenance, formula_known: bool) -> dict:
        rep = docs[0]
        origins = [Member(registry_id=d["registry_id"], kind=d["origin"]["kind"], source=d["origin"]["source"],
                          run_id=d["origin"].get("run_id")) for d in docs]
        runs = [m.run_id for m in origins if m.run_id]
        doc = ValidatedDoc(
            registry_id=rep["registry_id"], provenance=provenance,
            formula_pretty=rep["formula_pretty"], chemsys=rep["chemsys"], elements=rep["elements"],
            nsites=rep["nsites"], structure=structures[0], valid=not reasons, reasons=reasons, checks=checks,
            members=[d["registry_id"] for d in docs], member_origins=origins, origin_kind=rep["origin"]["kind"],
            novel=all(m.kind != "mined" for m in origins), unique=len(runs) == len(set(runs)), formula_known=formula_known,
            structure_updated=rep["last_updated"],
        )
        return to_mongo(doc)


def _kind(doc: dict) -> str | None:
    """The origin kind of a structure document; None for one without a readable origin."""
    origin = doc.get("origin")
    return origin.get("kind") if isinstance(origin, dict) else None

"""A hand-made generation run whose SUN figures are known, for the run-quality and `generate metrics` tests.

Nine samples of the Mg-Mn-O system (the reference set the `references` fixture loads) plus one invalid one:

    0 MnO rock salt           E_hull 0.02  stable, novel structure, known formula       -> SUN
    1 MnO rock salt again     (the same structure: a duplicate of 0, not unique)
    2 MnO2 pyrolusite         E_hull 0.00  stable, but a known (mined) structure matches
    3 Mg3MnO5                 E_hull 0.30  unstable, a composition MP does not have
    4 Mg4MnO6                 E_hull 0.05  stable, a composition MP does not have        -> SUN, SUN by composition
    5 Mn2O3                   relaxation failed
    6 MgO rock salt           valid, never relaxed (pending)
    7 NaCl2                   invalid: not charge-balanced
    8 a reject                the generator's output could not be read

The build's validate stage runs for real; relaxation and stability documents are written by hand (CHGNet would
not give round numbers). The MnO relaxation moves one of its two atoms by 0.2 Å: an RMSD of 0.1 Å once the net
translation is removed; every other relaxation moves nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pymatgen.core import Lattice, Structure

from builders.chain import build
from generators.base import Generator
from generators.run import run_generator
from registry.db.client import Registry
from registry.io.ingest import Ingestor
from registry.io.records import Record
from schemas.base import to_mongo
from schemas.relaxed import PotentialInfo, RelaxedDoc
from schemas.stability import StabilityDoc
from schemas.stage import Provenance, StageDoc, State
from schemas.structure import Origin, OriginKind

POTENTIAL = PotentialInfo(spec="chgnet", name="CHGNet", version="0.3.0", device="cpu", model_check_max_error=0.05)
REFERENCE_SETS = ["mp-test (0123abcd)"]


def rocksalt(a: float, cation: str) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [cation, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
                                     ).get_primitive_structure()


def pyrolusite() -> Structure:
    return Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.40, 2.87), ["Mn", "O"],
                                     [[0, 0, 0], [0.305, 0.305, 0]])


def grid(species: list[str], nx: int, ny: int) -> Structure:
    """Atoms 2 Å apart on a plane grid: valid (no close contacts, sane volume), whatever the composition."""
    coords = [[i / nx, j / ny, 0] for j in range(ny) for i in range(nx)][:len(species)]
    return Structure(Lattice.orthorhombic(2.0 * nx, 2.0 * ny, 3.0), species, coords)


def moved(structure: Structure, site: int, by: float) -> Structure:
    """`structure` with one site moved `by` Å along x."""
    out = structure.copy()
    out.translate_sites([site], [by, 0, 0], frac_coords=False)
    return out


class HandMade(Generator):
    """Yields the given structures in order; None is a sample that could not be read."""

    name = "hand-made"
    version = "1"

    def __init__(self, structures: list[Structure | None]) -> None:
        self.structures = structures

    def parameters(self) -> dict[str, Any]:
        return {"samples": len(self.structures)}

    def generate(self, run_id: str) -> Iterator[Record]:
        for i, structure in enumerate(self.structures):
            origin = Origin(kind=OriginKind.generated, source=self.name, source_id=f"{run_id}:{i}",
                            generator=self.name, version=self.version, run_id=run_id)
            yield Record(origin, structure) if structure is not None else Record.reject(origin, "unreadable sample")


def _relaxed(reg: Registry, rep: dict[str, Any], final: Structure | None) -> None:
    provenance = Provenance(builder="relax")
    if final is None:
        doc = StageDoc(registry_id=rep["registry_id"], state=State.failed, error="relaxation exploded",
                       provenance=provenance)
    else:
        doc = RelaxedDoc(registry_id=rep["registry_id"], provenance=provenance, formula_pretty=rep["formula_pretty"],
                         chemsys=rep["chemsys"], elements=rep["elements"], nsites=rep["nsites"],
                         input_structure=Structure.from_dict(rep["structure"]), structure=final, status="converged",
                         converged=True, steps=10, fmax=0.1, max_steps=500, potential=POTENTIAL)
    reg.collection("relaxed").insert_one(to_mongo(doc))


def stability(reg: Registry, rep: dict[str, Any], e_hull: float) -> None:
    doc = StabilityDoc(registry_id=rep["registry_id"], provenance=Provenance(builder="stability"),
                       formula_pretty=rep["formula_pretty"], chemsys=rep["chemsys"], formation_energy_per_atom=-1.0,
                       e_above_hull=e_hull, e_above_hull_all=e_hull, decomposition={}, n_references=3,
                       n_references_same_system=1, thin_hull=False, hull_complete=True, reference_sets=REFERENCE_SETS)
    reg.collection("stability").insert_one(to_mongo(doc))


def hand_made_run(reg: Registry) -> tuple[str, dict[str, dict[str, Any]]]:
    """The run above, validated, with its relaxation and stability documents: (run id, formula -> the validated
    document of the run's structure of that formula)."""
    known = Origin(kind=OriginKind.mined, source="test", source_id="pyrolusite")
    Ingestor(reg).write([Record(known, pyrolusite())])
    mno = rocksalt(4.45, "Mn")
    samples = [mno, moved(mno, 1, 0.02), moved(pyrolusite(), 1, 0.02), grid(["Mg"] * 3 + ["Mn"] + ["O"] * 5, 3, 3),
               grid(["Mg"] * 4 + ["Mn"] + ["O"] * 6, 4, 3), grid(["Mn"] * 2 + ["O"] * 3, 5, 1), rocksalt(4.21, "Mg"),
               Structure(Lattice.cubic(5.0), ["Na", "Cl", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]]), None]
    doc, _ = run_generator(reg, HandMade(samples))
    build(reg, "validate", progress=False)
    reps = {d["formula_pretty"]: d for d in reg.find({"member_origins.run_id": doc.run_id}, "validated")}
    _relaxed(reg, reps["MnO"], moved(Structure.from_dict(reps["MnO"]["structure"]), 0, 0.2))
    for formula in ("MnO2", "Mg3MnO5", "Mg4MnO6"):
        _relaxed(reg, reps[formula], Structure.from_dict(reps[formula]["structure"]))
    _relaxed(reg, reps["Mn2O3"], None)
    for formula, e_hull in (("MnO", 0.02), ("MnO2", 0.0), ("Mg3MnO5", 0.3), ("Mg4MnO6", 0.05)):
        stability(reg, reps[formula], e_hull)
    return doc.run_id, reps

"""A small registry with every stage filled, shared by the sets, bundle, report and CLI tests.

The structure, validate, stability and rank stages are the real ones; relaxed, predicted, tunnels and insertion
documents are written by hand (a potential, a band-gap model and BVSE would take minutes) with the values below.
"""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymatgen.core import Composition, Lattice, Structure

from builders.chain import BuildOptions, make_builder
from builders.run import run_builder
from registry.db.client import Registry
from registry.db.known import load_reference_set
from registry.io.ingest import Ingestor
from registry.io.readers import parse_cif
from registry.io.records import Record
from registry.science.channels import ChannelReport, ChannelSettings, FreeSpheres, IonChannel, ion_limits
from registry.science.references import ReferenceComposition, ReferenceSet, TableRead, elemental_energy
from schemas.base import to_mongo
from schemas.predicted import PredictedDoc, Prediction
from schemas.relaxed import PotentialInfo, RelaxedDoc
from schemas.stage import Provenance
from schemas.structure import Origin, RejectDoc
from schemas.tunnels import TunnelsDoc

REFERENCES = Path(__file__).resolve().parents[1] / "registry" / "data" / "sample" / "tunnel_references"
ION_RADII = {"Mg": 0.57, "Zn": 0.60, "Ca": 1.00, "Al": 0.39}  # Shannon, smallest tabulated coordination (Å)

# source id (generated) or file stem (mined) -> (E_form eV/atom, band gap eV, 1-D channel, Df Å)
VALUES = {
    "Rutile": (-3.30, 2.0, True, 1.0), "anatase": (-3.28, 2.2, False, 1.6),
    "beta-MnO2": (-1.90, 0.3, True, 1.3), "beta-FeOOH": (-1.70, 1.5, True, 2.4),
    "VO2": (-2.40, 0.2, True, 1.3), "CrO2": (-1.80, 0.5, True, 1.0), "TiVO4": (-2.95, 0.8, True, 1.25),
}
MINED_E_FORM = {"Rutile": -3.35, "anatase": -3.33, "beta-MnO2": -1.93, "beta-FeOOH": -1.75}
# generated source id -> Mg insertion (average V, mAh/g, conversion V); the others have no insertion document
INSERTION = {"VO2": (2.1, 250.0, 1.4), "TiVO4": (1.6, 120.0, 1.9), "CrO2": (1.8, 230.0, 1.2)}


def _rutile_like(a: float, c: float, species: tuple[str, str]) -> Structure:
    u = 0.305
    return Structure(Lattice.tetragonal(a, c), [species[0], species[1], "O", "O", "O", "O"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [u, u, 0], [-u, -u, 0], [0.5 + u, 0.5 - u, 0.5],
                      [0.5 - u, 0.5 + u, 0.5]])


def seed_records() -> list[Record]:
    out = []
    for path in sorted(REFERENCES.glob("*.cif")):
        stem = next(k for k in MINED_E_FORM if path.name.startswith(k))
        out.append(Record(Origin(kind="mined", source="cif", source_id=stem, file=path.name),
                          parse_cif(path.read_text())[0], {"formation_energy_per_atom": MINED_E_FORM[stem]}))

    def generated(source_id: str, structure: Structure) -> Record:
        return Record(Origin(kind="generated", source="test", source_id=source_id, run_id="run-1",
                             generator="test"), structure)

    out += [generated("VO2", _rutile_like(4.55, 2.85, ("V", "V"))),
            generated("CrO2", _rutile_like(4.42, 2.92, ("Cr", "Cr"))),
            generated("TiVO4", _rutile_like(4.60, 2.90, ("Ti", "V"))),
            generated("NiO2", _rutile_like(4.40, 2.80, ("Ni", "Ni"))),  # its relaxation "explodes"
            generated("NaCl2", Structure(Lattice.cubic(5.0), ["Na", "Cl", "Cl"],
                                         [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]]))]  # not charge-balanced
    return out


def _tunnels(doc: dict, one_d: bool, df: float) -> dict:
    settings = ChannelSettings(resolution=0.25, encut=10.0)
    limits = {ion: ion_limits(ion) for ion in ION_RADII}
    ions = {ion: IonChannel(ion=ion, in_structure=False, radius=r, limits=limits[ion], free_sphere=df,
                            fits=df >= limits[ion].min_free_sphere, e_1d=0.6 if one_d else None,
                            dimensionality=1 if one_d else None, admits=one_d and df >= limits[ion].min_free_sphere)
            for ion, r in ION_RADII.items()}
    report = ChannelReport(formula=doc["formula_pretty"], settings=settings, ions=ions, has_1d_channel=one_d,
                           zeopp=FreeSpheres(di=df + 0.3, df=df, dif=df + 0.1))
    return to_mongo(TunnelsDoc(
        registry_id=doc["registry_id"], last_updated=doc["last_updated"],
        provenance=Provenance(builder="tunnels", parameters={"ions": list(ION_RADII)}),
        formula_pretty=doc["formula_pretty"], chemsys=doc["chemsys"], has_1d_channel=one_d,
        channel_axis="c" if one_d else None, free_sphere=df, admits={i: c.admits for i, c in ions.items()},
        dimensionality={i: c.dimensionality for i, c in ions.items()}, report=report))


def _insertion(doc: dict, voltage: float, capacity: float, conversion: float) -> dict:
    """The per-ion values an insertion document stores flat (the rank stage reads nothing else)."""
    return {"registry_id": doc["registry_id"], "state": "successful", "last_updated": doc["last_updated"],
            "formula_pretty": doc["formula_pretty"], "chemsys": doc["chemsys"],
            "provenance": to_mongo(Provenance(builder="insertion")),
            "average_voltage": {"Mg": voltage}, "capacity_grav": {"Mg": capacity}, "max_delta_volume": {"Mg": 0.05},
            "conversion_voltage": {"Mg": conversion}, "conversion_preferred": {"Mg": conversion > voltage},
            "warnings": [f"Mg: conversion at {conversion} V beats intercalation at {voltage} V"]
            if conversion > voltage else []}


def seed_references(reg) -> None:
    """A reference set of the seed's elements (at 0) and nothing else: E_hull is judged against the mined
    structures' energies above, as a complete hull."""
    elements = sorted({el.symbol for r in seed_records() for el in r.structure.composition.elements})
    rows = {el: ReferenceComposition(Composition(el).reduced_formula, [el], [0.0]) for el in elements}
    load_reference_set(reg, ReferenceSet(name="seed-elements", description="the seed's elements", origin="tests",
                                         licence="-", energy_scheme="elements only"), TableRead(rows, []))


def seed(reg) -> dict[str, str]:
    """Fill `reg`; returns formula (or mined file stem) -> registry_id of each ranked candidate."""
    Ingestor(reg).write(seed_records())
    seed_references(reg)
    reg.collection("rejects").insert_one(to_mongo(RejectDoc.make(stage="ingest", source="csv", row=3,
                                                                 reason="unreadable CIF: no atoms")))
    reg.ensure_indexes()
    run_builder(make_builder(reg, "validate"), "validate", progress=False)
    potential = PotentialInfo(spec="chgnet", name="CHGNet", version="0.3.0", device="cpu", model_check_max_error=0.04)
    source_ids = {d["registry_id"]: d["origin"]["source_id"] for d in reg.find(fields=["registry_id", "origin"])}
    ids = {}
    for doc in reg.find({"valid": True}, collection="validated"):
        key = source_ids[doc["registry_id"]]
        structure = Structure.from_dict(doc["structure"])
        base = dict(registry_id=doc["registry_id"], last_updated=doc["structure_updated"],
                    formula_pretty=doc["formula_pretty"], chemsys=doc["chemsys"])
        if key == "NiO2":
            reg.collection("relaxed").insert_one(to_mongo(RelaxedDoc(
                **base, state="failed", error="relaxation exploded: energy diverged", elements=doc["elements"],
                nsites=doc["nsites"], provenance=Provenance(builder="relax"), input_structure=structure,
                status="exploded", converged=False, steps=3, fmax=0.1, max_steps=3,
                potential=potential)))
            continue
        e_form, gap, one_d, df = VALUES[key]
        composition = Composition(doc["formula_pretty"])
        energy = e_form + sum(x * elemental_energy(el.symbol) for el, x in composition.fractional_composition.items())
        reg.collection("relaxed").insert_one(to_mongo(RelaxedDoc(
            **base, elements=doc["elements"], nsites=doc["nsites"], provenance=Provenance(builder="relax"),
            input_structure=structure, structure=structure, status="converged", converged=True,
            energy_per_atom=energy, steps=3, fmax=0.1, max_steps=3, potential=potential, relaxation_sane=True)))
        reg.collection("predicted").insert_one(to_mongo(PredictedDoc(
            **base, elements=doc["elements"], nsites=doc["nsites"], provenance=Provenance(builder="predict"),
            energy_per_atom=energy, formation_energy_per_atom=e_form, band_gap=gap, converged=True,
            predictions={"band_gap": Prediction(value=gap, model="test", version="0", method="by hand")})))
        reg.collection("tunnels").insert_one(_tunnels(doc, one_d, df))
        if key in INSERTION:
            reg.collection("insertion").insert_one(_insertion(base, *INSERTION[key]))
        ids[key] = doc["registry_id"]
    options = BuildOptions(scope={})
    for stage in ("stability", "rank"):
        run_builder(make_builder(reg, stage, options), stage, progress=False)
    return ids


@pytest.fixture(scope="module")
def seeded_registry(server) -> Iterator[tuple[Registry, dict[str, str]]]:
    """Seeded once per test module (about a second); the stage documents are only read by the tests."""
    reg = Registry(f"{server.uri}seed_{uuid.uuid4().hex[:10]}")
    ids = seed(reg)
    yield reg, ids
    reg.client.drop_database(reg.database)


@pytest.fixture
def seeded(seeded_registry) -> Iterator[tuple[Registry, dict[str, str]]]:
    """The seeded registry and its candidates' ids; the sets a test makes are dropped after it."""
    yield seeded_registry
    seeded_registry[0].collection("candidate_sets").drop()

"""Data-mined substitution on the tunnel references: charge-balanced, distinct, traceable and repeatable."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Species, Structure

from generators.run import run_generator
from generators.substitution import SubstitutionGenerator, decorate
from registry.io.readers import read_path
from registry.io.records import Record
from registry.science.validity import composition_validity, structure_problem

PYROLUSITE = "beta-MnO2_pyrolusite_1x1_mp-510408.cif"
AKAGANEITE = "beta-FeOOH_akaganeite_hollandite-type_2x2_mp-1237867.cif"
RUTILE = "Rutile_TiO2_AFLOW-A2B_tP6_136_f_a.cif"


def framework(path: Path) -> tuple[str, Structure]:
    """A reference CIF with the id `registry ingest` would give it."""
    (record,) = read_path(path)
    return record.origin.registry_id(), record.structure


@pytest.fixture(scope="module")
def references(shared_data: Path) -> dict[str, tuple[str, Structure]]:
    folder = shared_data / "tunnel_references"
    return {name: framework(folder / name) for name in (PYROLUSITE, AKAGANEITE, RUTILE)}


def run(generator: SubstitutionGenerator) -> list[Record]:
    return list(generator.generate(generator.run_id()))


@pytest.fixture(scope="module")
def tunnels(references) -> tuple[SubstitutionGenerator, list[Record]]:
    """Pyrolusite (1x1 tunnels, Mn4+) and akaganeite (2x2 tunnels, Fe3+ with H+ on the tunnel walls)."""
    generator = SubstitutionGenerator([references[PYROLUSITE], references[AKAGANEITE]])
    return generator, run(generator)


def test_outputs_are_charge_balanced_new_compositions_that_record_parent_and_substitution(tunnels, references):
    generator, records = tunnels
    parents = {fid: decorate(s) for fid, s in (references[PYROLUSITE], references[AKAGANEITE])}
    assert records and all(r.structure is not None for r in records)
    for record in records:
        origin = record.origin
        p = origin.parameters
        assert origin.kind == "generated" and origin.generator == "substitution" and origin.run_id
        assert origin.source_id == f"{origin.run_id}:{p['parent']}:" + ",".join(
            f"{old}>{new}" for old, new in sorted(p["substitution"].items()))
        parent = parents[p["parent"]].composition
        assert set(p["substitution"]) <= {str(sp) for sp in parent}
        charge = sum(Species.from_str(p["substitution"].get(str(sp), str(sp))).oxi_state * n
                     for sp, n in parent.items())
        assert abs(charge) < 1e-8
        assert composition_validity(record.structure.composition)
        assert record.structure.composition.reduced_formula != parent.reduced_formula
        assert p["probability"] >= generator.threshold
        assert structure_problem(record.structure) is None


def test_working_ions_replace_tunnel_cations_with_the_framework_metal_compensating(tunnels, references):
    _, records = tunnels
    akaganeite_id = references[AKAGANEITE][0]
    with_ions = [r for r in records if r.origin.parameters["ions"]]
    assert with_ions
    for record in with_ions:
        substitution = record.origin.parameters["substitution"]
        assert record.origin.parameters["parent"] == akaganeite_id
        assert substitution["H+"] == "Mg2+" and Species.from_str(substitution["Fe3+"]).oxi_state == 2
        assert "H" not in record.structure.composition


def test_every_output_is_a_distinct_structure_even_from_two_frameworks_of_one_prototype(references):
    """Rutile TiO2 and pyrolusite MnO2 share the rutile prototype, so most of their substitutions coincide."""
    generator = SubstitutionGenerator([references[RUTILE], references[PYROLUSITE]], max_per_parent=40)
    records = run(generator)
    structures = [r.structure for r in records] + [s for _, s in (references[RUTILE], references[PYROLUSITE])]
    matcher = StructureMatcher()
    for i, a in enumerate(structures):
        for b in structures[i + 1:]:
            assert a.composition.reduced_formula != b.composition.reduced_formula or not matcher.fit(a, b)
    c = generator.counts
    assert c.duplicates > 0 and len(records) == c.outputs
    assert c.candidates == c.outputs + c.rejected + c.duplicates + c.capped
    assert generator.filtered == c.duplicates


def test_the_cap_takes_turns_between_kept_tunnel_cations_and_working_ions(references):
    generator = SubstitutionGenerator([references[AKAGANEITE]], max_per_parent=2)
    records = run(generator)
    assert sorted(tuple(r.origin.parameters["ions"]) for r in records) == [(), ("Mg",)]
    assert generator.counts.capped == generator.counts.candidates - 2


def test_a_higher_threshold_keeps_only_probable_substitutions(references):
    generator = SubstitutionGenerator([references[AKAGANEITE]], threshold=1e-3, max_per_parent=100)
    records = run(generator)
    assert records and all(r.origin.parameters["probability"] >= 1e-3 for r in records)
    assert not any(r.origin.parameters["ions"] for r in records)  # H+ -> Mg2+ alone is about 1e-3


def test_the_lattice_follows_the_ionic_radii_where_every_species_has_one(tunnels):
    _, records = tunnels
    by_key = {(r.origin.parameters["parent"], tuple(r.origin.parameters["substitution"].items())): r.origin.parameters
              for r in records}
    zirconia = next(p for (_, sub), p in by_key.items() if sub == (("Mn4+", "Zr4+"),))
    chromia = next(p for (_, sub), p in by_key.items() if sub == (("Mn4+", "Cr4+"),))
    assert zirconia["volume_scaling"] == "ionic radii" and zirconia["volume_ratio"] > 1.1  # Zr4+ 0.86 Å vs Mn4+ 0.67
    assert chromia["volume_ratio"] < zirconia["volume_ratio"]
    hydroxides = [p for p in by_key.values() if "H+" in p["volume_scaling"]]
    assert hydroxides and all(p["volume_ratio"] == 1.0 for p in hydroxides)  # H+ has no ionic radius


def test_same_frameworks_and_parameters_give_the_same_run_and_outputs(tunnels, references):
    generator, records = tunnels
    again = SubstitutionGenerator([references[AKAGANEITE], references[PYROLUSITE]], selection="given in another order")
    assert again.run_id() == generator.run_id()
    repeated = run(again)
    assert [r.origin.source_id for r in repeated] == [r.origin.source_id for r in records]
    assert all(a.structure == b.structure for a, b in zip(repeated, records, strict=True))
    assert SubstitutionGenerator([references[PYROLUSITE]], max_per_parent=3).run_id() != generator.run_id()


def test_rerunning_into_the_registry_writes_nothing_new(registry, references):
    generator = SubstitutionGenerator([references[PYROLUSITE]], max_per_parent=5)
    doc, first = run_generator(registry, generator)
    _, second = run_generator(registry, SubstitutionGenerator([references[PYROLUSITE]], max_per_parent=5))
    assert first.ingested == doc.produced == 5 and doc.parsed == 5
    assert second.ingested == second.updated == 0 and second.unchanged == 5
    assert registry.count({"origin.source": "substitution", "origin.parameters.parent": references[PYROLUSITE][0]}) == 5
    assert registry.count({"run_id": doc.run_id}, collection="generation_runs") == 1


def test_frameworks_without_oxidation_states_or_metals_are_rejects_with_a_reason(references):
    nial = Structure(Lattice.cubic(2.88), ["Ni", "Al"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # an intermetallic
    periclase = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    generator = SubstitutionGenerator([("nial", nial), ("periclase", periclase), references[PYROLUSITE]])
    records = run(generator)
    rejects = {r.origin.parameters["parent"]: r.reason for r in records if r.structure is None}
    assert rejects["nial"].startswith("no oxidation states: nial: ")
    assert rejects["periclase"].startswith("no transition-metal cation: periclase: ")
    assert any(r.structure is not None for r in records)
    assert generator.counts.skipped == 2 and generator.counts.reasons == {"no oxidation states": 1,
                                                                          "no transition-metal cation": 1}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"threshold": 0}, "threshold"),
    ({"max_per_parent": 0}, "max_per_parent"),
    ({"ions": ["Mg", "Qq"]}, "unknown working-ion elements: Qq"),
])
def test_bad_parameters_are_refused_up_front(references, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SubstitutionGenerator([references[PYROLUSITE]], **kwargs)

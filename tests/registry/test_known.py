"""Known compounds: reference sets in the database, the hulls built from them, and what counts as a known formula."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pymatgen.core import Composition
from pymatgen.entries.compatibility import MaterialsProject2020Compatibility, MaterialsProjectCompatibility
from pymatgen.entries.computed_entries import ComputedEntry
from pymatgen.io.vasp.sets import MPRelaxSet

from builders.chain import make_builder
from builders.run import run_builder
from registry.db.known import ensure_references, known_compounds, load_reference_set
from registry.science.references import ReferenceComposition, ReferenceSet, TableRead, mp2020_shift, read_table, shipped_set

HAND_MADE = ReferenceSet(name="hand-made", description="two Mn oxides", origin="this test", licence="-",
                         energy_scheme="MP2020 (by hand)")


def table(**energies: float) -> TableRead:
    """A reference table by hand: formula -> formation energy (eV/atom)."""
    out = {}
    for formula, e_form in energies.items():
        comp = Composition(formula)
        out[comp.reduced_formula] = ReferenceComposition(comp.reduced_formula,
                                                         sorted(el.symbol for el in comp.elements), [e_form])
    return TableRead(out, rejected=[])


def predicted(registry_id: str, formula: str, e_form: float) -> dict:
    comp = Composition(formula)
    return {"registry_id": registry_id, "formula_pretty": comp.reduced_formula, "state": "successful",
            "chemsys": "-".join(sorted(el.symbol for el in comp.elements)), "formation_energy_per_atom": e_form,
            "last_updated": datetime.now(UTC)}


def test_hull_from_hand_made_reference_entries(registry):
    # Mn-O with MnO2 at -1.8 (x_O = 2/3) and MnO at -1.9 (x_O = 1/2); the elements at 0
    load_reference_set(registry, HAND_MADE, table(MnO2=-1.8, MnO=-1.9))
    hull = known_compounds(registry).hull("Mn-O")
    assert hull.n_references == 2 and hull.complete
    # Mn2O3 (x_O = 0.6) against the MnO-MnO2 tie line: 0.6 of the way from 1/2 to 2/3 is 0.6 -> t = 0.6
    # E_line = -1.9 + (0.6 - 0.5) / (2/3 - 0.5) * (-1.8 + 1.9) = -1.84
    result = hull.evaluate("Mn2O3", -1.80)
    assert result.e_above_hull == pytest.approx(0.04)
    # Mn2O3 decomposes into MnO and MnO2 by atom fractions: x_MnO * 1/2 + (1 - x_MnO) * 2/3 = 0.6 -> x_MnO = 0.4
    assert result.decomposition == {"hand-made:MnO": pytest.approx(0.4), "hand-made:MnO2": pytest.approx(0.6)}
    assert hull.evaluate("MnO2", -1.9).e_above_hull == pytest.approx(-0.1)


def test_loading_references_twice_changes_nothing(registry):
    subset = read_table(elements=["Mg", "Mn", "O"])
    first = load_reference_set(registry, shipped_set(), subset, ["Mg", "Mn", "O"])
    assert first.added == len(subset.compositions) > 40 and first.unchanged == 0
    [before] = registry.find({}, collection="reference_sets")
    again = load_reference_set(registry, shipped_set(), subset, ["Mg", "Mn", "O"])
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, len(subset.compositions))
    [after] = registry.find({}, collection="reference_sets")
    assert after == before  # not even the set's timestamp moved
    assert registry.count({}, collection="references") == len(subset.compositions)
    # a set that lost a composition loses its document too
    smaller = TableRead({k: v for k, v in subset.compositions.items() if k != "MgO"}, [])
    assert load_reference_set(registry, shipped_set(), smaller, ["Mg", "Mn", "O"]).removed == 1
    assert registry.count({"formula_pretty": "MgO"}, collection="references") == 0
    # the build loads the shipped set only when none is loaded
    assert ensure_references(registry) is None


def test_the_shipped_mp_table_puts_the_known_mg_mn_oxides_on_the_hull(registry):
    load_reference_set(registry, shipped_set(), read_table(elements=["Mg", "Mn", "O"]))
    hull = known_compounds(registry).hull("Mg-Mn-O")
    on_hull = {e.composition.reduced_formula for e in hull.diagram.stable_entries if not e.composition.is_element}
    assert {"MgO", "MnO", "Mn3O4", "Mn2O3", "MnO2", "MgMn2O4"} <= on_hull
    [mno2] = registry.find({"formula_pretty": "MnO2"}, collection="references")
    # the legacy value is moved to MP2020: +0.0145 eV/atom for MnO2 (O -0.702 -> -0.687 eV per O)
    assert mno2["correction_shift"] == pytest.approx(0.0145, abs=1e-4)
    assert mno2["formation_energy_per_atom"] == pytest.approx(mno2["formation_energy_per_atom_as_given"] + 0.0145,
                                                              abs=1e-4)


def _correction(composition: Composition, scheme) -> float:
    """pymatgen's own correction (eV/atom) of a composition-only entry run as MP would (GGA+U on U metals)."""
    config = MPRelaxSet.CONFIG
    symbols = sorted(el.symbol for el in composition.elements)
    hubbards = {el: config["INCAR"]["LDAUU"]["O"].get(el, 0) for el in symbols}
    ggau = any(hubbards.values())
    potcars = [f"PBE {config['POTCAR'][el]}" for el in symbols]
    entry = ComputedEntry(composition, 0.0, parameters={
        "run_type": "GGA+U" if ggau else "GGA", "is_hubbard": ggau, "hubbards": hubbards if ggau else {},
        "potcar_symbols": potcars, "potcar_spec": [{"titel": p, "hash": None} for p in potcars]})
    return scheme.process_entry(entry).correction / composition.num_atoms


@pytest.mark.parametrize("formula", ["MnO2", "Fe2O3", "FeHO2", "LiCoO2", "MgO", "V2O5"])
def test_the_mp2020_shift_is_the_difference_of_pymatgens_two_schemes(formula):
    comp = Composition(formula)
    expected = _correction(comp, MaterialsProject2020Compatibility()) - _correction(comp, MaterialsProjectCompatibility())
    assert mp2020_shift(comp) == pytest.approx(expected, abs=1e-9)


def test_mixed_anion_and_non_oxides_are_kept_as_given():
    assert mp2020_shift(Composition("VOF")) == 0.0 and mp2020_shift(Composition("FeS2")) == 0.0
    assert mp2020_shift(Composition("Fe3Al")) == 0.0


def test_stability_names_its_reference_set_and_flags_what_it_cannot_trust(registry):
    load_reference_set(registry, HAND_MADE, table(MnO2=-1.8, MnO=-1.9))
    registry.collection("predicted").insert_many([
        predicted("mno2", "MnO2", -1.75),
        predicted("far-below", "Mn2O3", -2.3),  # 0.46 eV/atom under the MnO-MnO2 line: suspicious
        predicted("mgo", "MgO", -3.0),  # no reference set covers Mg
    ])
    assert run_builder(make_builder(registry, "stability"), "stability", progress=False).failed == 0
    docs = {d["registry_id"]: d for d in registry.find(collection="stability")}
    assert docs["mno2"]["e_above_hull"] == pytest.approx(0.05)
    assert docs["mno2"]["hull_complete"] and docs["mno2"]["warnings"] == []
    assert docs["mno2"]["reference_sets"][0].startswith("hand-made (")
    assert docs["mno2"]["energy_schemes"] == ["MP2020 (by hand)"]
    assert any("below the reference hull" in f for f in docs["far-below"]["warnings"])
    assert not docs["mgo"]["hull_complete"] and docs["mgo"]["missing_elements"] == ["Mg"]
    assert any("no loaded reference set covers Mg" in f for f in docs["mgo"]["warnings"])
    # a new load of the set rebuilds every system judged against the old one
    assert run_builder(make_builder(registry, "stability"), "stability", progress=False).processed == 0
    load_reference_set(registry, HAND_MADE, table(MnO2=-1.8, MnO=-1.9, MgO=-3.1))
    assert run_builder(make_builder(registry, "stability"), "stability", progress=False).processed == 3
    [mgo] = registry.find({"registry_id": "mgo"}, collection="stability")
    assert mgo["hull_complete"] and mgo["e_above_hull"] == pytest.approx(0.1)


def test_no_reference_set_is_an_incomplete_hull(registry):
    registry.collection("predicted").insert_one(predicted("mno2", "MnO2", -1.75))
    run_builder(make_builder(registry, "stability"), "stability", progress=False)
    [doc] = registry.find(collection="stability")
    assert not doc["hull_complete"] and "no reference set loaded" in doc["warnings"][0]


def test_a_formula_is_known_when_a_reference_set_has_it(registry):
    from registry.io.ingest import Ingestor
    from tests.builders.conftest import generated, rocksalt

    Ingestor(registry).write([generated("mno", rocksalt(4.45, ("Mn", "O"))),
                              generated("mgo", rocksalt(4.21, ("Mg", "O")))])
    registry.ensure_indexes()
    load_reference_set(registry, HAND_MADE, table(MnO2=-1.8, MnO=-1.9))

    def validate():
        return run_builder(make_builder(registry, "validate"), "validate", progress=False)

    validate()
    known = {d["formula_pretty"]: d["formula_known"] for d in registry.find(collection="validated")}
    assert known == {"MnO": True, "MgO": False}
    assert all(d["novel"] for d in registry.find(collection="validated"))  # no known *structure* matches either
    # MgO joins the reference set: the groups judged against the old set are judged again
    assert validate().processed == 0
    load_reference_set(registry, HAND_MADE, table(MnO2=-1.8, MnO=-1.9, MgO=-3.0))
    assert validate().processed == 2
    assert {d["formula_pretty"]: d["formula_known"] for d in registry.find(collection="validated")} == {
        "MnO": True, "MgO": True}

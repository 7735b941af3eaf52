from datetime import UTC, datetime, timedelta

import pytest

from builders.chain import BuildOptions, make_builder
from builders.run import run_builder
from registry.io.ingest import Ingestor
from tests.builders.conftest import generated, rocksalt

# mp-510408 MnO2 has MP formation energy -1.776 eV/atom (x_O = 2/3); MgMnO2 mp-1080243 -2.503.
MNO2_EF = -1.7763


def predicted(registry_id: str, formula: str, chemsys: str, e_form: float, when: datetime) -> dict:
    return {"registry_id": registry_id, "formula_pretty": formula, "chemsys": chemsys, "state": "successful",
            "formation_energy_per_atom": e_form, "last_updated": when}


def stability(reg, **kw):
    return run_builder(make_builder(reg, "stability", BuildOptions(**kw)), "stability", progress=False)


def test_energy_above_the_reference_hull(loaded):
    now = datetime.now(UTC)
    loaded.collection("predicted").insert_many([
        predicted("a", "Mn2O3", "Mn-O", -1.65, now),  # reference hull at x_O=0.6: 0.6/(2/3) * E(MnO2) = -1.60
        predicted("b", "MnO2", "Mn-O", -1.70, now),
        predicted("c", "MgO", "Mg-O", -3.0, now),  # no known Mg-O compound in this registry: thin hull
    ])
    report = stability(loaded)
    assert report.processed == 3 and report.failed == 0
    docs = {d["registry_id"]: d for d in loaded.find(collection="stability")}
    on_line = 0.6 / (2 / 3) * MNO2_EF
    assert docs["a"]["e_above_hull"] == pytest.approx(-1.65 - on_line, abs=1e-3)
    assert docs["a"]["e_above_hull"] < 0  # below the known hull: a new stable phase, if the model is right
    assert docs["b"]["e_above_hull"] == pytest.approx(-1.70 - MNO2_EF, abs=1e-3)
    assert docs["b"]["decomposition"] == {"mp-510408": pytest.approx(1.0)}
    assert docs["b"]["n_references"] == 1 and not docs["b"]["thin_hull"]
    assert docs["c"]["thin_hull"] and docs["c"]["e_above_hull"] == pytest.approx(-3.0)
    # with the predictions in the hull, Mn2O3 (below the reference hull) is on it: 0
    assert docs["a"]["e_above_hull_all"] == pytest.approx(0.0, abs=1e-9)


def test_only_the_changed_chemical_system_is_rebuilt(loaded):
    now = datetime.now(UTC)
    loaded.collection("predicted").insert_many([predicted("a", "Mn2O3", "Mn-O", -1.5, now),
                                                predicted("c", "MgO", "Mg-O", -3.0, now)])
    stability(loaded)
    assert stability(loaded).processed == 0
    loaded.collection("predicted").insert_one(predicted("d", "Mn3O4", "Mn-O", -1.6, now + timedelta(seconds=1)))
    report = stability(loaded)
    assert report.processed == 2  # the Mn-O system: the new structure and the one it may push off the hull
    assert {d["registry_id"] for d in loaded.find({"chemsys": "Mn-O"}, collection="stability")} == {"a", "d"}


def test_a_new_known_compound_rebuilds_the_systems_that_contain_it(loaded):
    loaded.collection("predicted").insert_one(predicted("c", "MgO", "Mg-O", -3.0, datetime.now(UTC)))
    stability(loaded)
    mgo = rocksalt(4.21, ("Mg", "O"))
    record = generated("mgo-known", mgo)
    record.origin = record.origin.model_copy(update={"kind": "mined"})
    record.reference = {"formation_energy_per_atom": -3.05}
    Ingestor(loaded).write([record])
    assert stability(loaded).processed == 1
    [doc] = loaded.find({"registry_id": "c"}, collection="stability")
    assert doc["e_above_hull"] == pytest.approx(0.05) and not doc["thin_hull"]

"""The DFT comparison stage: MP2020 corrections, formation energy and E_hull on the registry's reference hull,
ML-minus-DFT deltas, the validation verdict, and incremental rebuilds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pymatgen.analysis.compatibility import MP2020_COMPAT_CONFIG
from pymatgen.core import Structure

from builders.chain import BuildOptions, make_builder
from builders.run import run_builder
from registry.io.dft import ingest_results
from registry.io.ingest import Ingestor
from registry.io.records import Record
from schemas.structure import Origin
from tests.registry.test_dft import (
    KNOWN_MNO2,
    fcc,
    fluorite,
    mp_entry,
    rocksalt_mgo,
    rutile,
    seed,
    strained,
    write_json,
)

# pymatgen's MP2020Compatibility.yaml, eV per atom of the element the correction is for
OXIDE = MP2020_COMPAT_CONFIG["Corrections"]["CompositionCorrections"]["oxide"]  # -0.687 per O
MN_U = MP2020_COMPAT_CONFIG["Corrections"]["GGAUMixingCorrections"]["O"]["Mn"]  # -1.668 per Mn (GGA+U oxide)
MNO2_CORRECTION = (MN_U + 2 * OXIDE) / 3  # one Mn and two O in three atoms: (-1.668 - 1.374) / 3 = -1.014
MGO_CORRECTION = OXIDE / 2  # one O in two atoms: -0.3435; Mg has no U


def compare(reg, **options):
    return run_builder(make_builder(reg, "dft", BuildOptions(**options)), "dft", progress=False)


def comparisons(reg) -> dict[str, dict]:
    return {d["registry_id"]: d for d in reg.find(collection="dft_comparison")}


def test_corrected_formation_energy_hull_deltas_and_verdict(registry, tmp_path):
    ids = seed(registry)
    cao = Structure(fcc(4.8), ["Ca", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    write_json(tmp_path / "runs.json", [
        mp_entry(strained(fluorite()), MNO2_CORRECTION, -1.65, data={"registry_id": ids["fluorite"], "band_gap": 0.8}),
        mp_entry(strained(rocksalt_mgo()), MGO_CORRECTION, -3.0, data={"registry_id": ids["mgo"], "band_gap": 4.5}),
        mp_entry(cao, OXIDE / 2, -3.2),  # not in the registry: unlinked, so never compared
    ])
    ingest_results(registry, [tmp_path])
    report = compare(registry)
    assert report.processed == 2 and report.failed == 0
    docs = comparisons(registry)

    mno2 = docs[ids["fluorite"]]
    assert mno2["dft"]["correction_per_atom"] == pytest.approx(MNO2_CORRECTION)
    assert mno2["dft"]["formation_energy_per_atom"] == pytest.approx(-1.65)
    assert mno2["functional"] == "GGA+U"
    # the reference hull of Mn-O is the known rutile MnO2 alone: E_hull = -1.65 - (-1.80) = 0.15
    assert mno2["dft"]["e_above_hull"] == pytest.approx(-1.65 - KNOWN_MNO2)
    assert mno2["dft"]["decomposition"] == {"rutile-MnO2": pytest.approx(1.0)}  # labelled by source id, as in stability
    # ML minus DFT (the seeded ML values: E_form -1.70, E_hull 0.10, gap 0.5)
    assert mno2["delta"]["formation_energy_per_atom"] == pytest.approx(-1.70 - -1.65)
    assert mno2["delta"]["e_above_hull"] == pytest.approx(0.10 - 0.15)
    assert mno2["delta"]["band_gap"] == pytest.approx(0.5 - 0.8)
    assert mno2["known_polymorph"]["registry_id"] == ids["rutile"]
    assert mno2["known_polymorph"]["dft_minus_known"] == pytest.approx(0.15)
    assert mno2["structure_retained"] and mno2["rmsd"] < 0.1
    assert not mno2["dft_validated"] and mno2["validation"][0] == "DFT E_hull 0.150 eV/atom > 0.1"

    mgo = docs[ids["mgo"]]
    assert mgo["dft"]["correction_per_atom"] == pytest.approx(MGO_CORRECTION) and mgo["functional"] == "GGA"
    assert mgo["thin_hull"] and mgo["dft"]["e_above_hull"] == pytest.approx(-3.0)  # no known Mg-O compound
    assert mgo["dft_validated"] and mgo["known_polymorph"] is None


def test_a_gga_run_of_a_manganese_oxide_is_rejected_by_mp2020(registry, tmp_path):
    ids = seed(registry)
    write_json(tmp_path / "gga.json", mp_entry(strained(fluorite()), 0.0, -1.6, gga_u=False,
                                               data={"registry_id": ids["fluorite"]}))
    ingest_results(registry, [tmp_path])
    assert compare(registry).failed == 1
    doc = comparisons(registry)[ids["fluorite"]]
    assert doc["state"] == "failed" and not doc["dft_validated"]
    assert "MP2020 compatibility rejects" in doc["error"] and "Invalid U value of 0.0 on Mn" in doc["error"]


def test_static_runs_are_preferred_and_failed_runs_never_used(registry, tmp_path):
    ids = seed(registry)
    tag = {"registry_id": ids["fluorite"]}
    write_json(tmp_path / "runs.json", [
        mp_entry(strained(fluorite()), MNO2_CORRECTION, -1.66, data={**tag, "task_type": "Structure Optimization"},
                 entry_id="relax"),
        mp_entry(strained(fluorite()), MNO2_CORRECTION, -1.64, data={**tag, "task_type": "Static"},
                 entry_id="static"),
        mp_entry(strained(fluorite()), MNO2_CORRECTION, -2.50, data={**tag, "converged": False},
                 entry_id="unconverged"),
        mp_entry(strained(rocksalt_mgo()), MGO_CORRECTION, -3.0, data={"registry_id": ids["mgo"], "state": "error"}),
    ])
    ingest_results(registry, [tmp_path])
    compare(registry)
    docs = comparisons(registry)
    static = registry.find({"source.entry_id": "static"}, collection="dft")[0]
    mno2 = docs[ids["fluorite"]]
    assert mno2["dft_id"] == static["dft_id"] and mno2["calc_kind"] == "static" and len(mno2["dft_ids"]) == 3
    assert mno2["dft"]["formation_energy_per_atom"] == pytest.approx(-1.64)  # not the lower relax, not the failed
    mgo = docs[ids["mgo"]]
    assert mgo["state"] == "failed" and "no successful DFT calculation" in mgo["error"] and not mgo["dft_validated"]


def test_only_what_changed_is_compared_again(registry, tmp_path):
    ids = seed(registry)
    write_json(tmp_path / "runs.json", [
        mp_entry(strained(fluorite()), MNO2_CORRECTION, -1.65, data={"registry_id": ids["fluorite"]}),
        mp_entry(strained(rocksalt_mgo()), MGO_CORRECTION, -3.0, data={"registry_id": ids["mgo"]}),
    ])
    ingest_results(registry, [tmp_path])
    assert compare(registry).processed == 2
    assert compare(registry).processed == 0

    later = datetime.now(UTC) + timedelta(seconds=1)  # the model re-predicts MgO
    registry.collection("predicted").update_one({"registry_id": ids["mgo"]},
                                                {"$set": {"formation_energy_per_atom": -3.1, "last_updated": later}})
    assert compare(registry).processed == 1
    assert comparisons(registry)[ids["mgo"]]["delta"]["formation_energy_per_atom"] == pytest.approx(-3.1 - -3.0)

    # a lower-energy known MnO2 polymorph moves the Mn-O hull: the MnO2 comparison is redone
    Ingestor(registry).write([Record(Origin(kind="mined", source="test", source_id="rutile-MnO2-b"), rutile(0.30),
                                     {"formation_energy_per_atom": -1.90})])
    assert compare(registry).processed == 1
    mno2 = comparisons(registry)[ids["fluorite"]]
    assert mno2["dft"]["e_above_hull"] == pytest.approx(-1.65 - -1.90)
    assert mno2["known_polymorph"]["formation_energy_per_atom"] == pytest.approx(-1.90)

    registry.collection("dft").delete_many({"registry_id": ids["mgo"]})  # its calculations withdrawn
    compare(registry)
    assert set(comparisons(registry)) == {ids["fluorite"]}


def test_the_validation_threshold_is_the_presets(registry):
    assert make_builder(registry, "dft", BuildOptions(preset="tunnel")).e_hull_threshold == 0.1
    assert make_builder(registry, "dft", BuildOptions(preset="paper")).e_hull_threshold == 0.08

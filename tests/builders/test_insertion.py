from datetime import UTC, datetime

import pytest
from pymatgen.core import Composition, Lattice, Structure

from builders.chain import BuildOptions, _known, build, make_builder
from builders.insertion import NOT_ADMITTED, InsertionBuilder
from builders.run import run_builder
from registry.io.ingest import Ingestor
from registry.io.records import Record
from registry.science.criteria import VOLTAGE_WINDOWS
from registry.science.frameworks import get_framework
from registry.science.insertion import InsertionSettings
from schemas.structure import Origin

F_MAH = 96485.33212 / 3.6  # Faraday's constant, mAh per mole of electrons
AKAGANEITE = "beta-FeOOH_akaganeite_hollandite-type_2x2_mp-1237867.cif"
# few steps, one level, one ordering: these tests check the bookkeeping; the physics is in the slow test
QUICK = InsertionSettings(steps=3, max_sites=1, max_levels=1, max_configurations=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def relaxed(registry_id: str, structure: Structure) -> dict:
    return {"registry_id": registry_id, "state": "successful", "formula_pretty": structure.composition.reduced_formula,
            "chemsys": structure.composition.chemical_system, "structure": structure.as_dict(),
            "last_updated": datetime.now(UTC)}


@pytest.fixture
def frameworks(registry, shared_data):
    """Akaganeite (2x2 hollandite-type channels, tunnels stage run for Mg and Ca) and rutile-type SnO2 with a
    hand-made tunnels document that lets Mg in: an open channel, but no transition metal to reduce."""
    akaganeite = Structure.from_file(shared_data / "tunnel_references" / AKAGANEITE)
    sno2 = Structure(Lattice.tetragonal(4.74, 3.19), ["Sn", "Sn", "O", "O", "O", "O"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.3, 0.3, 0], [0.7, 0.7, 0], [0.8, 0.2, 0.5], [0.2, 0.8, 0.5]])
    registry.ensure_indexes()  # as `registry build` does, before maggma's own
    registry.collection("relaxed").insert_many([relaxed("akaganeite", akaganeite), relaxed("sno2", sno2)])
    everything = BuildOptions(ions=("Mg", "Ca"), exhaustive=True)  # no stability documents: analyse all
    run_builder(make_builder(registry, "tunnels", everything), "tunnels", progress=False)
    for rid in ("sno2", "orphan", "broken"):  # orphan: no relaxed document; broken: an unreadable structure
        doc = relaxed(rid, sno2)
        registry.collection("tunnels").replace_one({"registry_id": rid}, {
            **{k: doc[k] for k in ("registry_id", "state", "formula_pretty", "chemsys", "last_updated")},
            "admits": {"Mg": True}, "report": {}}, upsert=True)
    registry.collection("relaxed").insert_one({**relaxed("broken", sno2), "structure": {"lattice": "?"}})
    return registry


def builder(registry, ions, settings=QUICK, **kwargs) -> InsertionBuilder:
    return InsertionBuilder(registry.store("tunnels"), registry.store("relaxed"), *_known(registry),
                            registry.store("insertion"), ions=ions, settings=settings, **kwargs)


def test_insertion_documents_and_reasons(frameworks):
    reg = frameworks
    report = run_builder(builder(reg, ["Mg"]), "insertion", progress=False)
    assert (report.processed, report.failed) == (4, 3)
    docs = {d["registry_id"]: d for d in reg.find(collection="insertion")}

    mg = docs["akaganeite"]["ions"]["Mg"]
    assert docs["akaganeite"]["state"] == "successful" and mg["state"] == "successful"
    assert mg["sites"] and mg["sites_found"] == len(mg["sites"]) + mg["sites_skipped"]
    assert mg["relaxations"][0]["n_ions"] == 0 and sum(r["kept"] for r in mg["relaxations"]) == 2
    assert mg["electrons_per_cell"] == 4  # four Fe3+ -> Fe2+ in the 16-atom cell
    assert mg["working_ion_reference"]["prototype"].startswith("hcp Mg")
    # capacity: x Mg per FeHO2 in the discharged state, 2 electrons each, over the discharged mass
    n_fe = 4 * mg["supercell"][0] * mg["supercell"][1] * mg["supercell"][2]
    x = mg["levels"][-1] / n_fe
    discharged = Composition({"Mg": x, "Fe": 1, "H": 1, "O": 2}).weight
    assert docs["akaganeite"]["capacity_grav"]["Mg"] == pytest.approx(x * 2 * F_MAH / discharged)
    assert isinstance(docs["akaganeite"]["average_voltage"]["Mg"], float)
    # every result carries its competing conversion; with no reference set loaded there is nothing to convert to
    assert docs["akaganeite"]["conversion_voltage"]["Mg"] == mg["conversion"]["voltage"] == 0.0
    assert docs["akaganeite"]["conversion_preferred"]["Mg"] is False and mg["conversion"]["reaction"] is None
    assert all(r["e_above_hull"] >= 0 for r in mg["relaxations"] if r["kept"])
    assert docs["akaganeite"]["provenance"]["parameters"]["steps"] == 3
    assert docs["akaganeite"]["potential"]["model_check_max_error"] < 0.1

    assert docs["sno2"]["state"] == "failed" and "no reducible transition metal" in docs["sno2"]["error"]
    assert docs["orphan"]["error"] == "Mg: no relaxed structure for this framework"
    assert docs["broken"]["error"].startswith("Mg: unreadable relaxed structure: ")
    assert run_builder(builder(reg, ["Mg"]), "insertion", progress=False).processed == 0

    # asking for Ca as well completes the documents; Ca's channel is closed, Mg is kept as it was
    again = run_builder(builder(reg, ["Mg", "Ca"]), "insertion", progress=False)
    assert again.processed == 4
    after = reg.collection("insertion").find_one({"registry_id": "akaganeite"})
    assert after["skipped_ions"] == {"Ca": NOT_ADMITTED}
    assert after["ions"]["Mg"]["wall_s"] == mg["wall_s"]
    assert run_builder(builder(reg, ["Mg", "Ca"]), "insertion", progress=False).processed == 0


def test_the_build_chain_gates_insertion_and_ranks_with_its_values(frameworks, references):
    """`registry build insertion` under the preset's E_hull gate, in two worker processes, for the ranked ion only;
    then rank reads the ion's voltage, capacity and volume change."""
    reg = frameworks
    now = datetime.now(UTC)
    for rid, e_hull in (("akaganeite", 0.05), ("sno2", 0.08), ("broken", 0.5)):  # orphan: no stability document
        base = {"registry_id": rid, "state": "successful", "last_updated": now}
        reg.collection("stability").insert_one({**base, "e_above_hull": e_hull})
        reg.collection("predicted").insert_one({**base, "formation_energy_per_atom": -1.7, "band_gap": 0.5})
        reg.collection("validated").insert_one({**base, "formula_pretty": rid, "elements": ["Fe", "H", "O"],
                                                "novel": True, "unique": True, "origin_kind": "generated"})
    options = BuildOptions(ion="Mg", workers=2, fmax=0.2, insertion_sites=1, insertion_levels=1,
                           insertion_configurations=1, insertion_steps=3)
    [report] = build(reg, "insertion", options, progress=False)
    assert (report.processed, report.failed, report.gated) == (2, 1, 2)
    docs = {d["registry_id"]: d for d in reg.find(collection="insertion")}
    assert set(docs) == {"akaganeite", "sno2"}
    akaganeite = docs["akaganeite"]
    assert set(akaganeite["ions"]) == {"Mg"} and not akaganeite["skipped_ions"]  # not every tunnels ion
    assert akaganeite["provenance"]["parameters"]["steps"] == 3 and akaganeite["ions"]["Mg"]["settings"]["fmax"] == 0.2
    assert build(reg, "insertion", options, progress=False)[0].processed == 0

    [ranked] = build(reg, "rank", options, progress=False)
    assert ranked.processed == 3
    candidate = reg.collection("candidates").find_one({"registry_id": "akaganeite", "ion": "Mg"})
    verdicts = {v["name"]: v for v in candidate["criteria"]}
    assert verdicts["voltage"]["value"] == akaganeite["average_voltage"]["Mg"]
    assert verdicts["capacity"]["value"] == akaganeite["capacity_grav"]["Mg"] > 0
    assert verdicts["volume_change"]["value"] == akaganeite["max_delta_volume"]["Mg"]
    assert verdicts["no_conversion"]["value"] == akaganeite["conversion_preferred"]["Mg"]
    assert akaganeite["ions"]["Mg"]["conversion"]["products"]  # against the loaded MP compounds (MgO, ...)
    sno2 = reg.collection("candidates").find_one({"registry_id": "sno2", "ion": "Mg"})
    assert sno2["values"]["insertion_error"].startswith("Mg: no reducible transition metal")
    notes = {v["name"]: v["note"] for v in sno2["criteria"]}
    assert notes["voltage"].startswith("no value for average_voltage.Mg")  # Sn4+ takes no electron: no result
    assert notes["insertion_voltage"].startswith("no value") and not sno2["passed"]  # hence not shown a host
    assert build(reg, "rank", options, progress=False)[0].processed == 0


@pytest.mark.slow
def test_every_ion_on_akaganeite(frameworks):
    """Default caps (4 sites, 2 levels, 2 orderings, 200 steps); Ca is tried although its channel is closed."""
    reg = frameworks
    ions = ["Mg", "Zn", "Ca", "Al"]
    run_builder(builder(reg, ions, InsertionSettings(), only_admitted=False, query={"registry_id": "akaganeite"}),
                "insertion", progress=False)
    doc = reg.collection("insertion").find_one({"registry_id": "akaganeite"})
    assert set(doc["ions"]) == set(ions)
    for ion in ("Mg", "Zn", "Al"):
        result = doc["ions"][ion]
        assert result["state"] == "successful", result["error"]
        assert len(result["levels"]) == 2 and result["electrode"]["num_steps"] >= 1
        assert doc["capacity_grav"][ion] > 0 and doc["stability_discharge"][ion] >= 0
    assert doc["ions"]["Ca"]["state"] == "failed" and "percolates" in doc["ions"]["Ca"]["error"]


@pytest.mark.slow
def test_hollandite_built_by_the_registry_takes_mg_at_a_sensible_voltage_and_names_the_conversion(references):
    """The library's alpha-MnO2 through validate, relax, tunnels and insertion (CHGNet, the build's caps) against
    the MP compounds of Mg-Mn-O: a 1-D channel along c that admits Mg, an insertion voltage inside the Mg window
    (2.3 V measured), and the conversion it competes with (to Mg2Mn3O8 and Mn2O3, higher: Ling et al. 2015 found
    magnesiated alpha-MnO2 largely converted)."""
    reg = references
    fw = get_framework("hollandite_alpha-MnO2")
    Ingestor(reg).write([Record(Origin(kind="mined", source="framework-library", source_id=fw.id), fw.structure())])
    options = BuildOptions(scope={}, exhaustive=True, ions=("Mg",), steps=300)
    for stage in ("validate", "relax", "tunnels", "insertion"):
        assert build(reg, stage, options, progress=False)[0].failed == 0
    [relaxed] = reg.find(collection="relaxed")
    [tunnels] = reg.find(collection="tunnels")
    [insertion] = reg.find(collection="insertion")
    assert relaxed["relaxation_sane"] and abs(relaxed["volume_change"]) < 0.1  # +4.9% measured
    assert tunnels["dimensionality"]["Mg"] == 1 and tunnels["admits"]["Mg"] and tunnels["channel_axis"] == "c"
    low, high = VOLTAGE_WINDOWS["Mg"]
    assert low <= insertion["average_voltage"]["Mg"] <= high
    assert insertion["capacity_grav"]["Mg"] > 100
    conversion = insertion["ions"]["Mg"]["conversion"]
    assert conversion["intercalation_voltage"] == pytest.approx(insertion["average_voltage"]["Mg"], abs=0.1)
    assert conversion["reaction"] and insertion["conversion_voltage"]["Mg"] == conversion["voltage"]
    assert insertion["conversion_preferred"]["Mg"] is (conversion["voltage"] > conversion["intercalation_voltage"])

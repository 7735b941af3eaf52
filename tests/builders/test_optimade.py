"""The OPTIMADE view: one entry per structure with the registry's properties, rebuilt only for what changed,
candidate sets included (they change outside the chain)."""

from datetime import UTC, datetime

from optimade.models import StructureResource, StructureResourceAttributes

from builders.chain import make_builder
from builders.run import run_builder
from registry.output.sets import create_set, remove_members
from schemas.optimade import OptimadeStructureDoc


def build(reg) -> int:
    return run_builder(make_builder(reg, "optimade"), "optimade", progress=False).processed


def entries(reg) -> dict[str, dict]:
    """source id -> OPTIMADE document."""
    return {d["_tmo_origin_id"]: d for d in reg.find(collection="optimade_structures")}


def test_every_structure_is_an_optimade_entry_with_the_registry_properties(seeded):
    reg, ids = seeded
    build(reg)
    docs = entries(reg)
    assert len(docs) == reg.count() and all(d["state"] == "successful" for d in docs.values())

    vo2 = docs["VO2"]
    assert vo2["id"] == vo2["immutable_id"] == vo2["registry_id"] == ids["VO2"]
    assert (vo2["elements"], vo2["nelements"], vo2["chemical_formula_reduced"], vo2["nsites"]) == (["O", "V"], 2, "O2V", 6)
    assert vo2["_tmo_origin_kind"] == "generated" and vo2["_tmo_relaxed"] is True and vo2["_tmo_novel"] is True
    assert (vo2["_tmo_formation_energy_per_atom"], vo2["_tmo_band_gap"], vo2["_tmo_free_sphere"]) == (-2.4, 0.2, 1.3)
    stability = reg.find({"registry_id": ids["VO2"]}, collection="stability")[0]
    assert vo2["_tmo_e_above_hull"] == stability["e_above_hull"]
    assert vo2["_tmo_hull_reference_sets"] == stability["reference_sets"]
    assert vo2["_tmo_channel_dimensionality_mg"] == 1
    assert vo2["_tmo_passes"] == [f"{c['preset']}:{c['ion']}" for c in reg.find(
        {"registry_id": ids["VO2"], "passed": True}, collection="candidates")]
    [insertion] = reg.find({"registry_id": ids["VO2"]}, collection="insertion") or [{}]
    assert vo2["_tmo_average_voltage_mg"] == (insertion.get("average_voltage") or {}).get("Mg")
    assert vo2["_tmo_capacity_grav_mg"] == (insertion.get("capacity_grav") or {}).get("Mg")

    assert docs["NiO2"]["_tmo_relaxed"] is False and docs["NiO2"]["_tmo_e_above_hull"] is None  # relaxation exploded
    assert docs["NaCl2"]["_tmo_valid"] is False and docs["beta-MnO2"]["_tmo_origin_kind"] == "mined"
    for doc in docs.values():  # a stored entry is a document of its collection, and what the server makes of it
        OptimadeStructureDoc.model_validate(doc)
        served = {k: v for k, v in doc.items() if k in StructureResourceAttributes.model_fields or k.startswith("_tmo_")}
        StructureResource(id=doc["id"], type="structures", attributes={**served, "last_modified": doc["last_updated"]})


def test_only_what_changed_is_rebuilt_candidate_sets_included(seeded):
    reg, ids = seeded
    build(reg)
    assert build(reg) == 0

    create_set(reg, "mg-top", {"registry_id": {"$in": [ids["VO2"], ids["TiVO4"]]}})
    assert build(reg) == 2  # its members
    assert {k for k, d in entries(reg).items() if d["_tmo_sets"] == ["mg-top"]} == {"VO2", "TiVO4"}

    remove_members(reg, "mg-top", [ids["VO2"]])
    assert build(reg) == 2  # both were listed by a version of the set that changed; only VO2's entry differs
    docs = entries(reg)
    assert docs["VO2"]["_tmo_sets"] == [] and docs["TiVO4"]["_tmo_sets"] == ["mg-top"]
    assert build(reg) == 0

    # a candidate that now passes its preset (as a re-rank would write it)
    reg.collection("candidates").update_one({"registry_id": ids["CrO2"], "preset": "tunnel", "ion": "Mg"},
                                            {"$set": {"passed": True, "last_updated": datetime.now(UTC)}})
    assert build(reg) == 1 and entries(reg)["CrO2"]["_tmo_passes"] == ["tunnel:Mg"]

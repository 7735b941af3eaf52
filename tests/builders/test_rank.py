from datetime import UTC, datetime, timedelta

from builders.chain import BuildOptions, make_builder
from builders.run import run_builder

NOW = datetime.now(UTC)


def stage_docs(rid: str, *, novel=True, e_hull=0.02, gap=0.3, admits=True, known=False, when=NOW) -> dict[str, dict]:
    base = {"registry_id": rid, "state": "successful", "last_updated": when}
    return {
        "validated": {**base, "formula_pretty": "MgMn2O4", "elements": ["Mg", "Mn", "O"], "novel": novel,
                      "unique": True, "formula_known": known, "origin_kind": "generated", "members": [rid]},
        "predicted": {**base, "formation_energy_per_atom": -2.0, "band_gap": gap, "converged": True,
                      "energy_per_atom": -7.0},
        "stability": {**base, "e_above_hull": e_hull, "e_above_hull_all": e_hull, "thin_hull": False,
                      "hull_complete": True},
        "tunnels": {**base, "has_1d_channel": True, "admits": {"Mg": admits}, "free_sphere": 2.5},
    }


def insert(reg, *docs: dict[str, dict]) -> None:
    for d in docs:
        for collection, doc in d.items():
            reg.collection(collection).replace_one({"registry_id": doc["registry_id"]}, doc, upsert=True)


def rank(reg, **kw):
    return run_builder(make_builder(reg, "rank", BuildOptions(**kw)), "rank", progress=False)


def test_candidates_store_every_verdict_and_rank_by_score(registry):
    insert(registry, stage_docs("good"), stage_docs("wide-gap", gap=3.0), stage_docs("known", novel=False),
           stage_docs("blocked", admits=False))
    assert rank(registry).processed == 4
    docs = {d["registry_id"]: d for d in registry.find({"preset": "tunnel", "ion": "Mg"}, collection="candidates")}
    assert docs["good"]["passed"] and docs["wide-gap"]["passed"]
    assert docs["good"]["score"] > docs["wide-gap"]["score"]
    assert not docs["known"]["passed"] and not docs["blocked"]["passed"]
    failed = {v["name"] for v in docs["blocked"]["criteria"] if v["hard"] and not v["passed"]}
    assert failed == {"admits_ion"}
    verdict = next(v for v in docs["good"]["criteria"] if v["name"] == "e_above_hull")
    assert verdict["value"] == 0.02 and verdict["threshold"] == 0.1 and verdict["passed"]


def test_rank_is_incremental_per_preset_and_ion(registry):
    insert(registry, stage_docs("a"), stage_docs("b"))
    assert rank(registry).processed == 2
    assert rank(registry).processed == 0
    insert(registry, {"stability": stage_docs("a", e_hull=0.5, when=NOW + timedelta(seconds=5))["stability"]})
    assert rank(registry).processed == 1
    [a] = registry.find({"registry_id": "a", "preset": "tunnel"}, collection="candidates")
    assert not a["passed"]
    assert rank(registry, preset="paper").processed == 2  # another preset ranks separately
    assert registry.count(collection="candidates") == 4


def test_the_paper_preset_reads_whether_the_formula_is_known_from_validated(registry):
    insert(registry, stage_docs("new"), stage_docs("known", known=True))
    rank(registry, preset="paper")
    verdicts = {d["registry_id"]: next(v for v in d["criteria"] if v["name"] == "new_formula")
                for d in registry.find({"preset": "paper"}, collection="candidates")}
    assert verdicts["new"]["passed"] and not verdicts["known"]["passed"]
    assert verdicts["known"]["value"] is True


def insertion_doc(rid: str, voltage: float | None, capacity: float | None, swelling: float | None, when=NOW) -> dict:
    return {"insertion": {"registry_id": rid, "state": "successful", "last_updated": when,
                          "provenance": {"builder": "insertion", "built_at": when},
                          "average_voltage": {"Mg": voltage}, "capacity_grav": {"Mg": capacity},
                          "max_delta_volume": {"Mg": swelling}}}


def test_insertion_values_are_soft_criteria_and_a_new_ion_reranks(registry):
    insert(registry, stage_docs("host"), stage_docs("overvolted"), stage_docs("bare"),
           insertion_doc("host", 2.2, 180.0, 0.04), insertion_doc("overvolted", 4.5, 60.0, 0.3))
    assert rank(registry).processed == 3
    docs = {d["registry_id"]: d for d in registry.find({"preset": "tunnel", "ion": "Mg"}, collection="candidates")}
    verdicts = {rid: {v["name"]: v for v in d["criteria"]} for rid, d in docs.items()}
    assert docs["host"]["values"]["average_voltage"]["Mg"] == 2.2
    assert verdicts["host"]["voltage"]["threshold"] == [1.0, 3.5] and verdicts["host"]["voltage"]["passed"]
    assert verdicts["host"]["capacity"]["passed"] and verdicts["host"]["volume_change"]["passed"]
    assert not any(verdicts["overvolted"][n]["passed"] for n in ("voltage", "capacity", "volume_change"))
    assert "no value for average_voltage.Mg" in verdicts["bare"]["voltage"]["note"]
    # soft: all three pass the hard criteria; the insertion values order them
    assert all(d["passed"] for d in docs.values())
    assert docs["host"]["score"] > max(docs["bare"]["score"], docs["overvolted"]["score"])

    # the insertion stage added an ion to "bare" (new content, so a new last_updated): only it is ranked again
    insert(registry, insertion_doc("bare", 1.5, 120.0, 0.02, when=NOW + timedelta(seconds=5)))
    assert rank(registry).processed == 1
    [bare] = registry.find({"registry_id": "bare", "preset": "tunnel"}, collection="candidates")
    assert bare["values"]["capacity_grav"] == {"Mg": 120.0} and bare["score"] > docs["bare"]["score"]
    assert rank(registry).processed == 0

from datetime import UTC, datetime

import builders.rank as rank_module
import registry.db.client as client_module
from builders.chain import BuildOptions, make_builder
from builders.run import run_builder
from schemas.candidate import CandidateValues

NOW = datetime.now(UTC)


def stage_docs(rid: str, *, novel=True, e_hull=0.02, gap=0.3, admits=True, known=False, voltage=2.0, sane=True,
               when=NOW) -> dict[str, dict]:
    base = {"registry_id": rid, "state": "successful", "last_updated": when}
    insertion = {} if voltage is None else {"insertion": {
        **base, "average_voltage": {"Mg": voltage}, "capacity_grav": {"Mg": 200.0}, "conversion_preferred": {"Mg": False}}}
    return {
        "validated": {**base, "formula_pretty": "MgMn2O4", "elements": ["Mg", "Mn", "O"], "novel": novel,
                      "unique": True, "formula_known": known, "origin_kind": "generated", "members": [rid]},
        "relaxed": {**base, "relaxation_sane": sane,
                    "warnings": [] if sane else ["volume changed by +63% on relaxation (limit ±20%)"]},
        "predicted": {**base, "formation_energy_per_atom": -2.0, "band_gap": gap, "converged": True,
                      "energy_per_atom": -7.0},
        "stability": {**base, "e_above_hull": e_hull, "e_above_hull_all": e_hull, "thin_hull": False,
                      "hull_complete": True},
        "tunnels": {**base, "has_1d_channel": True, "admits": {"Mg": admits}, "dimensionality": {"Mg": 1},
                    "free_sphere": 2.5},
        **insertion,
    }


def insert(reg, *docs: dict[str, dict]) -> None:
    for d in docs:
        for collection, doc in d.items():
            reg.collection(collection).replace_one({"registry_id": doc["registry_id"]}, doc, upsert=True)


def rank(reg, **kw):
    return run_builder(make_builder(reg, "rank", BuildOptions(**kw)), "rank", progress=False)


def test_candidates_store_every_verdict_and_rank_by_score(registry):
    insert(registry, stage_docs("good"), stage_docs("wide-gap", gap=3.0), stage_docs("known", novel=False),
           stage_docs("blocked", admits=False), stage_docs("uphill", voltage=-0.3), stage_docs("swollen", sane=False))
    assert rank(registry).processed == 6
    docs = {d["registry_id"]: d for d in registry.find({"preset": "tunnel", "ion": "Mg"}, collection="candidates")}
    assert docs["good"]["passed"] and docs["wide-gap"]["passed"]
    assert docs["good"]["score"] > docs["wide-gap"]["score"]
    assert not docs["known"]["passed"] and not docs["blocked"]["passed"]
    failed = {rid: {v["name"] for v in docs[rid]["criteria"] if v["hard"] and not v["passed"]}
              for rid in ("blocked", "uphill", "swollen")}
    assert failed == {"blocked": {"admits_ion"}, "uphill": {"insertion_voltage"}, "swollen": {"relaxation_sane"}}
    assert docs["swollen"]["values"]["warnings"] == ["volume changed by +63% on relaxation (limit ±20%)"]
    verdict = next(v for v in docs["good"]["criteria"] if v["name"] == "e_above_hull")
    assert verdict["value"] == 0.02 and verdict["threshold"] == 0.1 and verdict["passed"]


def test_rank_is_incremental_per_preset_and_ion(registry):
    insert(registry, stage_docs("a"), stage_docs("b"))
    assert rank(registry).processed == 2
    assert rank(registry).processed == 0
    insert(registry, {"stability": stage_docs("a", e_hull=0.5, when=datetime.now(UTC))["stability"]})
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


def test_insertion_values_order_candidates_and_a_new_ion_reranks(registry):
    insert(registry, stage_docs("host"), stage_docs("overvolted"), stage_docs("bare", voltage=None),
           insertion_doc("host", 2.2, 180.0, 0.04), insertion_doc("overvolted", 4.5, 60.0, 0.3))
    assert rank(registry).processed == 3
    docs = {d["registry_id"]: d for d in registry.find({"preset": "tunnel", "ion": "Mg"}, collection="candidates")}
    verdicts = {rid: {v["name"]: v for v in d["criteria"]} for rid, d in docs.items()}
    assert docs["host"]["values"]["average_voltage"]["Mg"] == 2.2
    assert verdicts["host"]["voltage"]["threshold"] == [1.0, 3.5] and verdicts["host"]["voltage"]["passed"]
    assert verdicts["host"]["capacity"]["passed"] and verdicts["host"]["volume_change"]["passed"]
    assert not any(verdicts["overvolted"][n]["passed"] for n in ("voltage", "capacity", "volume_change"))
    assert "no value for average_voltage.Mg" in verdicts["bare"]["voltage"]["note"]
    # a positive voltage is the one hard insertion criterion: without any result, "bare" is not shown to be a host
    assert docs["host"]["passed"] and docs["overvolted"]["passed"] and not docs["bare"]["passed"]
    assert [n for n, v in verdicts["bare"].items() if v["hard"] and not v["passed"]] == ["insertion_voltage"]
    assert docs["host"]["score"] > max(docs["bare"]["score"], docs["overvolted"]["score"])

    # the insertion stage added an ion to "bare" (new content, so a new last_updated): only it is ranked again
    insert(registry, insertion_doc("bare", 1.5, 120.0, 0.02, when=datetime.now(UTC)))
    assert rank(registry).processed == 1
    [bare] = registry.find({"registry_id": "bare", "preset": "tunnel"}, collection="candidates")
    assert bare["values"]["capacity_grav"] == {"Mg": 120.0} and bare["score"] > docs["bare"]["score"]
    assert bare["passed"]
    assert rank(registry).processed == 0


def test_the_best_candidates_are_an_indexed_range_on_their_rank(registry):
    insert(registry, stage_docs("good", e_hull=0.05), stage_docs("better", e_hull=0.02), stage_docs("fails", admits=False))
    rank(registry)
    best = registry.top_candidates("tunnel", "Mg", 2, fields=["registry_id", "passed", "score"])
    assert [d["registry_id"] for d in best] == ["better", "good"] and [d["rank"] for d in best] == [1, 2]
    [fails] = registry.find({"registry_id": "fails"}, collection="candidates")
    assert fails["rank"] == 3 and not fails["passed"]  # a failing candidate comes after every passing one
    # a change of score moves the order without touching last_updated of the others
    [before] = registry.find({"registry_id": "better"}, collection="candidates")
    insert(registry, stage_docs("good", e_hull=0.0, when=datetime.now(UTC)))
    rank(registry)
    assert [d["registry_id"] for d in registry.top_candidates("tunnel", "Mg", 2)] == ["good", "better"]
    [after] = registry.find({"registry_id": "better"}, collection="candidates")
    assert after["rank"] == 2 and after["last_updated"] == before["last_updated"]


def test_only_the_best_carry_a_rank_and_a_longer_list_is_sorted_by_score(registry, monkeypatch):
    """A change rewrites at most RANKED ranks, however many candidates there are."""
    monkeypatch.setattr(rank_module, "RANKED", 2)
    monkeypatch.setattr(client_module, "RANKED", 2)
    insert(registry, stage_docs("good", e_hull=0.05), stage_docs("better", e_hull=0.02), stage_docs("fails", admits=False))
    rank(registry)
    ranks = {d["registry_id"]: d.get("rank") for d in registry.find(collection="candidates")}
    assert ranks == {"better": 1, "good": 2, "fails": None}
    assert [d["registry_id"] for d in registry.top_candidates("tunnel", "Mg", 3)] == ["better", "good", "fails"]
    insert(registry, stage_docs("fails", e_hull=0.0, when=datetime.now(UTC)))  # now passes, and first
    rank(registry)
    ranks = {d["registry_id"]: d.get("rank") for d in registry.find(collection="candidates")}
    assert ranks == {"fails": 1, "better": 2, "good": None}


def test_a_candidates_free_sphere_is_that_of_the_framework_its_ion_sees(registry):
    """The whole structure's Df (2.5 Å here) includes the working ion's own sites; `admits` judged the framework
    without them, and the candidate shows that one, beside where each of its values comes from."""
    docs = stage_docs("mg-filled")
    docs["tunnels"]["report"] = {"ions": {"Mg": {"free_sphere": 1.9}, "Zn": {"free_sphere": 2.1}}}
    insert(registry, docs)
    rank(registry)
    values = registry.find({"registry_id": "mg-filled"}, collection="candidates")[0]["values"]
    assert values["free_sphere"] == 1.9
    field = CandidateValues.model_fields["free_sphere"]
    assert field.json_schema_extra == {"stage": "tunnels"} and "working ion" in field.description

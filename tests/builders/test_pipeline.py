import time

from builders.chain import STAGES, build
from builders.stage import StageBuilder
from registry.io.ingest import Ingestor
from tests.builders.conftest import generated, rocksalt


def counts(reports):
    return {r.stage: r.processed for r in reports}


def test_the_whole_chain_is_incremental(loaded, fast, references, monkeypatch):
    full_checks = []  # stages that read every key and timestamp of their stores
    check = StageBuilder.stale_groups
    monkeypatch.setattr(StageBuilder, "stale_groups", lambda self: full_checks.append(self.stage) or check(self))
    time.sleep(1.1)  # the fixtures just ingested: a write within a build record's second of margin counts as new
    first = counts(build(loaded, "all", fast, progress=False))
    assert first["validate"] == 4 and first["screen"] == 3 and first["relax"] == 3 and first["predict"] == 3
    assert first["refine"] == 3  # every relaxed structure is decided on; those within the cut get the second tier
    assert first["rank"] == 3
    assert loaded.count(collection="candidates") == 3
    full_checks.clear()
    assert counts(build(loaded, "all", fast, progress=False)) == dict.fromkeys(STAGES, 0)
    assert full_checks == []  # the build after a build finds from its records that nothing changed

    Ingestor(loaded).write([generated("mgo", rocksalt(4.21, ("Mg", "O")))])
    third = counts(build(loaded, "all", fast, progress=False))
    assert third == {"validate": 1, "screen": 1, "relax": 1, "refine": 1, "predict": 1, "stability": 1, "tunnels": 1,
                     "insertion": 0, "dft": 0, "rank": 1, "funnel": 1, "optimade": 1}
    [mgo] = loaded.find({"formula_pretty": "MgO"}, collection="candidates")
    assert {v["name"] for v in mgo["criteria"]} >= {"oxide", "e_above_hull", "admits_ion", "novel"}

    funnel = {d["formula_pretty"]: d for d in loaded.find(collection="funnel")}
    assert len(funnel) == 5  # every validated structure has a record
    assert funnel["NaCl2"]["left_at"] == "validate" and "composition invalid" in funnel["NaCl2"]["reason"]
    assert funnel["MgO"]["reached"] in ("stability", "tunnels", "rank") and not funnel["MgO"]["pending"]
    assert funnel["MgO"]["left_at"] is None or funnel["MgO"]["reason"]

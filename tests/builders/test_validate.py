from builders.chain import BuildOptions, make_builder
from builders.run import run_builder
from registry.io.ingest import Ingestor
from tests.builders.conftest import generated, rocksalt


def validate(reg, **kw):
    return run_builder(make_builder(reg, "validate", BuildOptions(**kw)), "validate", progress=False)


def test_validity_dedupe_and_novelty(loaded):
    report = validate(loaded)
    assert report.processed == 4 and report.failed == 0  # 5 structures, two of them the same MnO2
    docs = {d["formula_pretty"]: d for d in loaded.find(collection="validated")}
    mno2 = docs["MnO2"]
    assert len(mno2["members"]) == 2 and not mno2["novel"]
    assert mno2["origin_kind"] == "mined"  # the known structure represents the pair
    assert docs["MnO"]["valid"] and docs["MnO"]["novel"] and docs["MnO"]["unique"]
    nacl2 = docs["NaCl2"]
    assert not nacl2["valid"] and not nacl2["checks"]["composition_valid"]
    assert "composition invalid" in nacl2["reasons"][0]


def test_second_run_does_nothing_and_a_new_structure_is_processed_alone(loaded):
    validate(loaded)
    assert validate(loaded).processed == 0
    Ingestor(loaded).write([generated("mgo", rocksalt(4.21, ("Mg", "O")))])
    report = validate(loaded)
    assert report.processed == 1
    assert loaded.count({"formula_pretty": "MgO"}, collection="validated") == 1
    assert validate(loaded, force=True).processed == 5


def test_a_duplicate_within_one_run_is_not_unique(loaded):
    Ingestor(loaded).write([generated("mno-again", rocksalt(4.45, ("Mn", "O")))])
    validate(loaded)
    [mno] = loaded.find({"formula_pretty": "MnO"}, collection="validated")
    assert len(mno["members"]) == 2 and not mno["unique"]


def test_elements_the_models_lack_are_invalid(loaded):
    Ingestor(loaded).write([generated("amo", rocksalt(5.0, ("Am", "O")))])
    validate(loaded)
    [amo] = loaded.find({"formula_pretty": "AmO"}, collection="validated")
    assert not amo["valid"] and amo["checks"]["uncovered_elements"] == ["Am"]


def test_a_new_polymorph_of_a_known_formula_is_novel_but_its_formula_is_known(loaded):
    rocksalt_mno2 = rocksalt(4.3, ("Mn", "O"))
    rocksalt_mno2.append("O", [0.25, 0.25, 0.25])  # MnO2, a structure no mined document has
    Ingestor(loaded).write([generated("mno2-polymorph", rocksalt_mno2)])
    validate(loaded)
    docs = {d["registry_id"]: d for d in loaded.find({"formula_pretty": {"$in": ["MnO2", "MnO"]}},
                                                     collection="validated")}
    new = next(d for d in docs.values() if d["members"] == [d["registry_id"]] and d["formula_pretty"] == "MnO2")
    assert new["novel"] and new["formula_known"]
    assert not next(d for d in docs.values() if d["formula_pretty"] == "MnO")["formula_known"]
